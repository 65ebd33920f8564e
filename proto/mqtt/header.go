package mqtt

// Header is a parsed fixed header.
type Header struct {
	Type      byte // packet type, CONNECT … AUTH
	Flags     byte // the low nibble of the first byte
	Remaining int  // remaining length: the size of the body after the header
}

// QoS returns the PUBLISH QoS bits of the flags (3 is invalid).
func (h Header) QoS() byte { return h.Flags >> 1 & 3 }

// Dup returns the PUBLISH DUP flag.
func (h Header) Dup() bool { return h.Flags&8 != 0 }

// Retain returns the PUBLISH RETAIN flag.
func (h Header) Retain() bool { return h.Flags&1 != 0 }

// fixedFlags is the flags nibble each packet type must carry (MQTT 5.0
// Table 2-2, the same in 3.1.1); -1 for PUBLISH, whose flags are checked by
// DecodePublish, and for the reserved type 0.
var fixedFlags = [16]int8{-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0}

// ReadPacket parses the fixed header at the start of b and returns it with
// the packet's body (the bytes after the header, a view into b whose
// capacity ends with the packet) and n, the packet's total size. The
// caller consumes b[:n] and decodes body with the decoder for h.Type.
//
// When b holds only part of a packet it returns ErrIncomplete, with n the
// total size once the header is complete (0 while the remaining length
// itself is cut short), so a caller can size its read. maxSize bounds the
// total packet size: ErrPacketTooLarge is returned (with n) as soon as the
// header announces a larger packet, before its body arrived. maxSize <= 0
// means the protocol limit, MaxPacketSize.
//
// ReadPacket checks only the fixed header: type 0 and flags other than the
// ones Table 2-2 fixes for the type are malformed (an *Error with
// MalformedPacket), as is a remaining length that is longer than four
// bytes or not in its shortest form. It does not know the protocol version,
// so it accepts type 15 (AUTH) for the decoder to refuse in 3.1.1.
func ReadPacket(b []byte, maxSize int) (h Header, body []byte, n int, err error) {
	if len(b) == 0 {
		return h, nil, 0, ErrIncomplete
	}
	h.Type, h.Flags = b[0]>>4, b[0]&15
	if h.Type == 0 {
		return Header{}, nil, 0, errReservedType
	}
	if f := fixedFlags[h.Type]; f >= 0 && h.Flags != byte(f) {
		return Header{}, nil, 0, errFixedFlags
	}
	rl, vn := decodeVarint(b[1:])
	if vn == 0 {
		return h, nil, 0, ErrIncomplete
	}
	if vn < 0 {
		return Header{}, nil, 0, varintErr(vn)
	}
	h.Remaining = int(rl)
	n = 1 + vn + int(rl)
	if maxSize > 0 && n > maxSize {
		return h, nil, n, ErrPacketTooLarge
	}
	if len(b) < n {
		return h, nil, n, ErrIncomplete
	}
	return h, b[1+vn : n : n], n, nil
}

// appendHeader appends a fixed header.
func appendHeader(b []byte, first byte, remaining int) []byte {
	return appendVarint(append(b, first), remaining)
}
