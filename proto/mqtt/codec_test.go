package mqtt

import (
	"fmt"
	"strings"
)

// Test-side shapes of the packets whose decoded form keeps its list in the
// body (SUBSCRIBE, UNSUBSCRIBE) and of the packets without a struct.
type subscribeV struct {
	PacketID uint16
	Props    Properties
	Filters  []SubscribeFilter
}

type unsubscribeV struct {
	PacketID uint16
	Props    Properties
	Filters  []string
}

type pingreqV struct{}
type pingrespV struct{}

func dumpFilters(fs []SubscribeFilter) string {
	var sb strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&sb, " [%q qos=%d nl=%v rap=%v rh=%d]", f.Filter, f.QoS, f.NoLocal, f.RetainAsPublished, f.RetainHandling)
	}
	return sb.String()
}

func subscribeFilters(s *Subscribe) []SubscribeFilter {
	var fs []SubscribeFilter
	for f := range s.Filters {
		fs = append(fs, f)
	}
	return fs
}

func unsubscribeFilters(u *Unsubscribe) [][]byte {
	var fs [][]byte
	for f := range u.Filters {
		fs = append(fs, f)
	}
	return fs
}

// dump renders any decoded or expected packet canonically.
func dump(x any) string {
	switch p := x.(type) {
	case *Publish:
		return dumpPublish(p)
	case *Connect:
		return fmt.Sprintf("CONNECT name=%q level=%d clean=%v keepalive=%d props=%s cid=%q will=%v/%d/%v wprops=%s wtopic=%q wpayload=%q user=%v/%q pass=%v/%q",
			p.ProtocolName, p.ProtocolLevel, p.CleanStart, p.KeepAlive, dumpProps(&p.Props), p.ClientID,
			p.WillFlag, p.WillQoS, p.WillRetain, dumpProps(&p.WillProps), p.WillTopic, p.WillPayload,
			p.UsernameFlag, p.Username, p.PasswordFlag, p.Password)
	case *Connack:
		return fmt.Sprintf("CONNACK sp=%v code=%#x props=%s", p.SessionPresent, p.Code, dumpProps(&p.Props))
	case *Ack:
		return fmt.Sprintf("%s id=%d code=%#x props=%s", TypeName(p.Type), p.PacketID, p.Code, dumpProps(&p.Props))
	case *Subscribe:
		if n := len(subscribeFilters(p)); n != p.Count {
			return fmt.Sprintf("SUBSCRIBE COUNT MISMATCH %d %d", n, p.Count)
		}
		return dump(&subscribeV{p.PacketID, p.Props, subscribeFilters(p)})
	case *subscribeV:
		return fmt.Sprintf("SUBSCRIBE id=%d props=%s filters=%s", p.PacketID, dumpProps(&p.Props), dumpFilters(p.Filters))
	case *Suback:
		return fmt.Sprintf("SUBACK id=%d props=%s codes=% x", p.PacketID, dumpProps(&p.Props), p.Codes)
	case *Unsubscribe:
		fs := unsubscribeFilters(p)
		if len(fs) != p.Count {
			return fmt.Sprintf("UNSUBSCRIBE COUNT MISMATCH %d %d", len(fs), p.Count)
		}
		v := &unsubscribeV{PacketID: p.PacketID, Props: p.Props}
		for _, f := range fs {
			v.Filters = append(v.Filters, string(f))
		}
		return dump(v)
	case *unsubscribeV:
		return fmt.Sprintf("UNSUBSCRIBE id=%d props=%s filters=%q", p.PacketID, dumpProps(&p.Props), p.Filters)
	case *Unsuback:
		return fmt.Sprintf("UNSUBACK id=%d props=%s codes=% x", p.PacketID, dumpProps(&p.Props), p.Codes)
	case *Disconnect:
		return fmt.Sprintf("DISCONNECT code=%#x props=%s", p.Code, dumpProps(&p.Props))
	case *Auth:
		return fmt.Sprintf("AUTH code=%#x props=%s", p.Code, dumpProps(&p.Props))
	case pingreqV:
		return "PINGREQ"
	case pingrespV:
		return "PINGRESP"
	}
	return fmt.Sprintf("UNKNOWN %T", x)
}

// decodeBody decodes one packet body with the decoder for h.Type.
func decodeBody(h Header, body []byte, version byte) (any, error) {
	var err error
	switch h.Type {
	case CONNECT:
		var c Connect
		err = DecodeConnect(body, &c)
		return &c, err
	case CONNACK:
		var c Connack
		err = DecodeConnack(body, version, &c)
		return &c, err
	case PUBLISH:
		var p Publish
		err = DecodePublish(h, body, version, &p)
		return &p, err
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		var a Ack
		err = DecodeAck(h, body, version, &a)
		return &a, err
	case SUBSCRIBE:
		var s Subscribe
		err = DecodeSubscribe(h, body, version, &s)
		return &s, err
	case SUBACK:
		var s Suback
		err = DecodeSuback(body, version, &s)
		return &s, err
	case UNSUBSCRIBE:
		var u Unsubscribe
		err = DecodeUnsubscribe(h, body, version, &u)
		return &u, err
	case UNSUBACK:
		var u Unsuback
		err = DecodeUnsuback(body, version, &u)
		return &u, err
	case PINGREQ:
		return pingreqV{}, DecodePingreq(body)
	case PINGRESP:
		return pingrespV{}, DecodePingresp(body)
	case DISCONNECT:
		var d Disconnect
		err = DecodeDisconnect(body, version, &d)
		return &d, err
	case AUTH:
		var a Auth
		err = DecodeAuth(body, version, &a)
		return &a, err
	}
	return nil, fmt.Errorf("type %d", h.Type)
}

// decodePacket frames and decodes one whole packet.
func decodePacket(b []byte, version byte) (any, error) {
	h, body, n, err := ReadPacket(b, 0)
	if err != nil {
		return nil, err
	}
	if n != len(b) {
		return nil, fmt.Errorf("ReadPacket consumed %d of %d bytes", n, len(b))
	}
	return decodeBody(h, body, version)
}

// encode appends any packet with its encoder. For CONNECT the version is
// the packet's own level.
func encode(b []byte, version byte, x any) []byte {
	switch p := x.(type) {
	case *Publish:
		return AppendPublish(b, version, p)
	case *Connect:
		return AppendConnect(b, p)
	case *Connack:
		return AppendConnack(b, version, p.SessionPresent, p.Code, &p.Props)
	case *Ack:
		return AppendAck(b, p.Type, version, p.PacketID, p.Code, &p.Props)
	case *Subscribe:
		return AppendSubscribe(b, version, p.PacketID, &p.Props, subscribeFilters(p))
	case *subscribeV:
		return AppendSubscribe(b, version, p.PacketID, &p.Props, p.Filters)
	case *Suback:
		return AppendSuback(b, version, p.PacketID, &p.Props, p.Codes)
	case *Unsubscribe:
		return AppendUnsubscribe(b, version, p.PacketID, &p.Props, unsubscribeFilters(p))
	case *unsubscribeV:
		var fs [][]byte
		for _, f := range p.Filters {
			fs = append(fs, []byte(f))
		}
		return AppendUnsubscribe(b, version, p.PacketID, &p.Props, fs)
	case *Unsuback:
		return AppendUnsuback(b, version, p.PacketID, &p.Props, p.Codes)
	case *Disconnect:
		return AppendDisconnect(b, version, p.Code, &p.Props)
	case *Auth:
		return AppendAuth(b, p.Code, &p.Props)
	case pingreqV:
		return AppendPingreq(b)
	case pingrespV:
		return AppendPingresp(b)
	}
	panic(fmt.Sprintf("encode %T", x))
}
