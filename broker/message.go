package broker

import (
	"encoding/binary"
	"encoding/json"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/gatecast/gatecast/proto"
)

// Message is one published message in protocol-neutral form: what every
// protocol adapter encodes from, and what nodes forward to each other.
//
// Lifetime: a Message lives for one dispatch. The publisher's adapter fills
// it (AcquireMessage), calls Session.Publish, and releases it; Topic,
// Payload and Props may point into the adapter's input buffer, so nothing
// keeps them past Deliver: an adapter that queues a message copies what it
// needs, and shared encodings are taken with Frame, whose reference count
// outlives the message.
type Message struct {
	Topic   string
	Payload []byte
	// QoS is the publisher's QoS (MQTT; 0 for the seed protocol).
	QoS byte
	// Retain is the publisher's retain flag (MQTT).
	Retain bool
	// Props holds the MQTT 5 properties that travel with the message
	// (payload format indicator, message expiry interval, content type,
	// response topic, correlation data, user properties) in their wire
	// form without the length prefix; nil when there are none. Topic
	// aliases and subscription identifiers are per-connection and never
	// in it.
	Props []byte

	from *Session // the publisher, for no-local; nil from no session
	// pub is the publishing connection's Publisher (SetPublisher); nil:
	// every check is made and every count goes straight to the metrics.
	pub  *Publisher
	json int8 // 0 unknown, 1 the payload is JSON text, -1 it is not
	// seedRaw is the publisher's seed message when it is the seed
	// encoding of Topic and Payload as it is (SeedDecoder.Verbatim): the
	// seed frame is then that, behind a header, with nothing re-encoded.
	// It views the read's buffer, as Payload does; nil otherwise.
	seedRaw []byte
	// claimed: a recipient took the message by copy (Claim); the others
	// share frames.
	claimed bool
	framed  uint8 // bit e: frame[e] is set
	frame   [maxEncodings]*proto.Frame
	// own holds the encodings made by Encode (own[e] = buf[start:end]).
	own [maxEncodings]struct{ start, end int32 }
	buf []byte // the encodings made by Encode; kept when the message is pooled
}

// Delivery is what one subscriber is owed for one message: the options of
// the subscriptions that matched it, merged when several did.
type Delivery struct {
	// QoS is min(the message's QoS, the highest QoS granted among the
	// matching subscriptions).
	QoS byte
	// RetainAsPublished: a matching subscription asked to keep the
	// publisher's retain flag (MQTT 5).
	RetainAsPublished bool
	// SubIDs are the subscription identifiers of the matching
	// subscriptions (MQTT 5); valid only during Deliver.
	SubIDs []uint32
}

// Encoding names one wire form of a message (a protocol, and a framing or
// option variant that changes the bytes) whose encoding every subscriber of
// that form shares. Adapters take theirs with NewEncoding at start-up.
type Encoding uint8

// maxEncodings bounds the encodings a message can cache.
const maxEncodings = 8

// EncodingSeed is the seed protocol's WebSocket text frame.
const EncodingSeed Encoding = 0

// encodings counts the slots taken besides EncodingSeed. It starts at zero
// with no initializer, so that package-level NewEncoding calls (which run
// before init functions) are counted right.
var encodings atomic.Uint32

// NewEncoding returns a new encoding slot. It panics past maxEncodings:
// encodings are fixed at start-up, per protocol variant, never per client.
func NewEncoding() Encoding {
	n := encodings.Add(1)
	if n >= maxEncodings {
		panic("broker: too many message encodings")
	}
	return Encoding(n)
}

// Frame returns the message's shared frame for encoding e, encoding it on
// first use with enc (a package-level function, so the call allocates
// nothing), or copying what Encode made for e. The message holds the
// returned reference; a caller that hands the frame on (to an outbox)
// Retains it first. Only the dispatching goroutine calls it, during
// Deliver.
func (m *Message) Frame(e Encoding, enc func(dst []byte, m *Message) []byte) *proto.Frame {
	if f := m.frame[e]; f != nil {
		return f
	}
	f := proto.AcquireFrame()
	if o := m.own[e]; o.end > 0 {
		f.B = append(f.B, m.buf[o.start:o.end]...)
	} else {
		f.B = enc(f.B, m)
	}
	m.frame[e] = f
	m.framed |= 1 << e
	return f
}

// Claim reports whether the caller is the first recipient of this
// dispatch to ask. The first one may take the message by copy (Encode,
// into an outbox that coalesces small writes); the others share one Frame
// per encoding. So a message with one recipient (a fan-in) never needs a
// refcounted Frame, and one with many costs each of them a reference, not
// a copy, however deep their queues. Only the dispatching goroutine calls
// it, during Deliver.
func (m *Message) Claim() bool {
	if m.claimed {
		return false
	}
	m.claimed = true
	return true
}

// Encode returns the message in encoding e, encoded with enc on first use
// into a buffer of the message's own: valid until the message is released
// or reset, for a caller that copies the bytes (an outbox that coalesces).
// A later Frame of the same encoding copies them instead of encoding
// again. Only the dispatching goroutine calls it, during Deliver; it
// allocates nothing once the pooled message's buffer has grown.
func (m *Message) Encode(e Encoding, enc func(dst []byte, m *Message) []byte) []byte {
	if o := m.own[e]; o.end > 0 {
		return m.buf[o.start:o.end]
	}
	start := len(m.buf)
	m.buf = enc(m.buf, m)
	m.own[e] = struct{ start, end int32 }{int32(start), int32(len(m.buf))}
	return m.buf[start:]
}

// SetPublisher hands the publishing connection's Publisher to the Publish
// of this message: its last checked topic may spare the checks, and the
// counts go to it until its Flush. Reset clears it.
func (m *Message) SetPublisher(p *Publisher) { m.pub = p }

// PayloadIsJSON reports whether the payload is one JSON value in valid
// UTF-8, the rule by which a seed subscriber gets it embedded as JSON
// rather than as a JSON string. Computed once per message.
func (m *Message) PayloadIsJSON() bool {
	if m.json == 0 {
		m.json = -1
		if utf8.Valid(m.Payload) && json.Valid(m.Payload) {
			m.json = 1
		}
	}
	return m.json > 0
}

// SetJSON records that the payload is known to be JSON text (a seed
// publish, validated by its decoder), so no subscriber re-checks it.
func (m *Message) SetJSON() { m.json = 1 }

var messagePool = sync.Pool{New: func() any { return new(Message) }}

// AcquireMessage returns an empty message from a pool.
func AcquireMessage() *Message { return messagePool.Get().(*Message) }

// ReleaseMessage releases the message's frames and returns it to the pool.
func ReleaseMessage(m *Message) {
	m.Reset()
	messagePool.Put(m)
}

// Reset releases the message's frames and empties it for the next
// publish, keeping its buffer: an adapter that publishes several messages
// of one read may fill and Publish the same Message for each of them.
func (m *Message) Reset() {
	m.releaseFrames()
	if len(m.buf) > 0 {
		m.own = [maxEncodings]struct{ start, end int32 }{}
		m.buf = m.buf[:0]
		if cap(m.buf) > maxOwnBuffer {
			m.buf = nil // one large message must not pin its buffer in the pool
		}
	}
	m.Topic, m.Payload, m.Props, m.from, m.pub, m.seedRaw = "", nil, nil, nil, nil, nil
	m.QoS, m.Retain, m.json, m.claimed = 0, false, 0, false
}

// maxOwnBuffer bounds the Encode buffer a pooled message keeps.
const maxOwnBuffer = 64 << 10

func (m *Message) releaseFrames() {
	if m.framed == 0 {
		return
	}
	for i, f := range m.frame {
		if f != nil {
			f.Release()
			m.frame[i] = nil
		}
	}
	m.framed = 0
}

// The forwarded form of a message between nodes (the topic travels beside
// it): a version byte that can never start a WebSocket frame, a flags byte,
// uvarint(len(props)) props, and the payload to the end. Nodes before this
// version forwarded seed text frames, which start with 0x81; DeliverRemote
// still reads those, for a rolling upgrade.
const (
	forwardVersion1 = 0x01
	fwdJSON         = 1 << 0 // the payload is JSON text
	fwdRetain       = 1 << 1
	fwdQoSShift     = 2 // two bits
)

// appendForward appends m's forwarded form to dst.
func appendForward(dst []byte, m *Message) []byte {
	flags := byte(m.QoS&3) << fwdQoSShift
	if m.json > 0 {
		flags |= fwdJSON
	}
	if m.Retain {
		flags |= fwdRetain
	}
	dst = append(dst, forwardVersion1, flags)
	dst = binary.AppendUvarint(dst, uint64(len(m.Props)))
	dst = append(dst, m.Props...)
	return append(dst, m.Payload...)
}

// parseForward fills m from b (a forwarded message, either form); m's
// slices point into b. It reports false for bytes it cannot read.
func parseForward(b []byte, m *Message, dec *proto.SeedDecoder) bool {
	if len(b) == 0 {
		return false
	}
	switch b[0] {
	case forwardVersion1:
		if len(b) < 2 {
			return false
		}
		flags := b[1]
		n, k := binary.Uvarint(b[2:])
		if k <= 0 || n > uint64(len(b)-2-k) {
			return false
		}
		rest := b[2+k:]
		if n > 0 {
			m.Props = rest[:n:n]
		}
		m.Payload = rest[n:]
		m.QoS = (flags >> fwdQoSShift) & 3
		m.Retain = flags&fwdRetain != 0
		if flags&fwdJSON != 0 {
			m.json = 1
		}
		return true
	case 0x81: // a seed text frame from a node of the previous version
		payload, ok := wsPayload(b)
		if !ok {
			return false
		}
		_, msg, err := dec.Decode(payload)
		if err != nil {
			return false
		}
		m.Payload = msg
		m.json = 1
		return true
	}
	return false
}

// wsPayload returns the payload of one unmasked WebSocket frame.
func wsPayload(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[1]&0x80 != 0 {
		return nil, false
	}
	n, h := int(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return nil, false
		}
		n, h = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return nil, false
		}
		v := binary.BigEndian.Uint64(b[2:])
		if v > uint64(len(b)) {
			return nil, false
		}
		n, h = int(v), 10
	}
	if len(b)-h != n {
		return nil, false
	}
	return b[h:], true
}
