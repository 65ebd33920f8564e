package netpoll

import (
	"encoding/binary"
	"unicode/utf8"
)

// AppendFrame appends one complete, unmasked server-to-client WebSocket
// frame (FIN set) carrying payload to dst and returns the extended slice:
// the encoding a proto.Frame's B must hold. It allocates only when dst lacks
// capacity.
func AppendFrame(dst []byte, text bool, payload []byte) []byte {
	op := byte(opBinary)
	if text {
		op = opText
	}
	return appendFrame(dst, op, payload)
}

func appendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = appendFrameHeader(dst, op, len(payload))
	return append(dst, payload...)
}

func appendFrameHeader(dst []byte, op byte, n int) []byte {
	b0 := 0x80 | op
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
	}
}

// frameHeaderLen is the size of the header appendFrameHeader writes for an
// n-byte payload.
func frameHeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// maxCloseReason is the longest close reason that fits a control frame
// (125 bytes of payload minus the 2-byte code).
const maxCloseReason = maxControlPayload - 2

// appendCloseFrame appends a close frame. Code 0 means "no status": the
// frame has an empty body and the reason is ignored.
func appendCloseFrame(dst []byte, code uint16, reason string) []byte {
	if code == 0 {
		return append(dst, 0x80|opClose, 0)
	}
	dst = append(dst, 0x80|opClose, byte(2+len(reason)))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// truncateReason shortens a close reason to fit a control frame without
// cutting a UTF-8 sequence in half.
func truncateReason(s string) string {
	if len(s) <= maxCloseReason {
		return s
	}
	i := maxCloseReason
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
