package mqtt

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// hx parses hex with optional spaces; a quoted run "…" stands for its
// ASCII bytes, so vectors read like the spec's tables.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	var out []byte
	for len(s) > 0 {
		switch c := s[0]; {
		case c == ' ' || c == '\n' || c == '\t' || c == '|':
			s = s[1:]
		case c == '"':
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				t.Fatalf("unterminated quote in %q", s)
			}
			out = append(out, s[1:1+end]...)
			s = s[2+end:]
		default:
			if len(s) < 2 {
				t.Fatalf("odd hex in %q", s)
			}
			b, err := hex.DecodeString(s[:2])
			if err != nil {
				t.Fatalf("bad hex %q: %v", s[:2], err)
			}
			out = append(out, b...)
			s = s[2:]
		}
	}
	return out
}

// mkProps builds Properties from (identifier, value) pairs: an int for the
// integer properties, a string for strings and binary data, a [2]string
// for a user property. Subscription identifiers and user properties are
// added in order.
func mkProps(kv ...any) Properties {
	var p Properties
	for i := 0; i+1 < len(kv); i += 2 {
		id := kv[i].(byte)
		switch v := kv[i+1].(type) {
		case int:
			if id == PropSubscriptionIdentifier {
				p.AddSubscriptionIdentifier(uint32(v))
				continue
			}
			p.setField(id, uint32(v), nil)
		case string:
			p.setField(id, 0, []byte(v))
		case [2]string:
			p.AddUserProperty([]byte(v[0]), []byte(v[1]))
			continue
		default:
			panic(fmt.Sprintf("mkProps: %T", v))
		}
		p.Set(id)
	}
	return p
}

// dumpProps renders properties canonically: present single-valued
// properties in identifier order, then user properties and subscription
// identifiers in order. Two Properties with the same dump are equal as far
// as the protocol is concerned.
func dumpProps(p *Properties) string {
	var sb strings.Builder
	sb.WriteString("{")
	for id := byte(1); id <= maxPropID; id++ {
		if propBit(id)&multiMask != 0 || !p.Has(id) {
			continue
		}
		num, v := p.field(id)
		switch propKinds[id] {
		case kindString, kindBinary:
			fmt.Fprintf(&sb, " %s=%q", propNames[id], v)
		default:
			fmt.Fprintf(&sb, " %s=%d", propNames[id], num)
		}
	}
	nu, ns := 0, 0
	for k, v := range p.UserProperties {
		fmt.Fprintf(&sb, " user(%q=%q)", k, v)
		nu++
	}
	for id := range p.SubscriptionIdentifiers {
		fmt.Fprintf(&sb, " subid=%d", id)
		ns++
	}
	if p.Has(PropUserProperty) != (nu > 0) || p.Has(PropSubscriptionIdentifier) != (ns > 0) {
		sb.WriteString(" INCONSISTENT-PRESENCE")
	}
	sb.WriteString(" }")
	return sb.String()
}

// errCode returns the reason code of a codec error, 0 for nil and 0xFF for
// an error that is not an *Error.
func errCode(err error) byte {
	if err == nil {
		return 0
	}
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	return 0xFF
}
