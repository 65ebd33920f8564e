package mqtt

import (
	"bytes"
	"errors"
	"testing"
)

// checkRoundTrip encodes a decoded packet and checks that the bytes frame
// and decode to the same packet: decode(encode(decode(x))) == decode(x).
func checkRoundTrip(t *testing.T, version byte, got any) {
	t.Helper()
	if c, ok := got.(*Connect); ok {
		version = c.ProtocolLevel
	}
	enc := encode(nil, version, got)
	if p, ok := got.(*Publish); ok && PublishLen(version, p) != len(enc) {
		t.Fatalf("PublishLen %d, encoded %d bytes", PublishLen(version, p), len(enc))
	}
	again, err := decodePacket(enc, version)
	if err != nil {
		t.Fatalf("re-encoded packet refused: %v\n%s\n% x", err, dump(got), enc)
	}
	if a, b := dump(got), dump(again); a != b {
		t.Fatalf("round trip changed the packet:\n first %s\nsecond %s", a, b)
	}
	// Encoding is deterministic and stable.
	if enc2 := encode(nil, version, again); !bytes.Equal(enc, enc2) {
		t.Fatalf("second encoding differs:\n% x\n% x", enc, enc2)
	}
}

// seed is one fuzz corpus entry: the arguments of a fuzz target.
type seed struct {
	name string
	args []any
}

// maxSeeds bounds the committed corpus of one target.
const maxSeeds = 40

// vectorSeeds returns the seeds of the decoder fuzz target for packet type
// typ: the valid vectors first, then the refused ones, as args(version,
// packet) builds them.
func vectorSeeds(tb testing.TB, typ byte, args func(version byte, pkt []byte) []any) []seed {
	var out []seed
	add := func(name string, version byte, hexs string) {
		b := hx(tb, hexs)
		if b[0]>>4 == typ && len(out) < maxSeeds {
			out = append(out, seed{name, args(version, b)})
		}
	}
	for _, v := range allVectors() {
		add(v.name, v.version, v.hex)
	}
	for _, v := range errorVectors {
		add(v.name, v.version, v.hex)
	}
	if typ == PUBLISH {
		for _, v := range publishErrors {
			add("publish "+v.name, v.version, v.hex)
		}
	}
	return out
}

// fuzzSeeds returns the seed corpus of each fuzz target, by target name.
func fuzzSeeds(tb testing.TB) map[string][]seed {
	body := func(b []byte) []byte { return bodyOf(b) }
	vb := func(v byte, b []byte) []any { return []any{versionSeed(v), body(b)} }
	m := map[string][]seed{
		"FuzzDecodeConnect":     vectorSeeds(tb, CONNECT, func(_ byte, b []byte) []any { return []any{body(b)} }),
		"FuzzDecodeConnack":     vectorSeeds(tb, CONNACK, vb),
		"FuzzDecodePublish":     vectorSeeds(tb, PUBLISH, func(v byte, b []byte) []any { return []any{versionSeed(v), b[0] & 15, body(b)} }),
		"FuzzDecodeSubscribe":   vectorSeeds(tb, SUBSCRIBE, vb),
		"FuzzDecodeSuback":      vectorSeeds(tb, SUBACK, vb),
		"FuzzDecodeUnsubscribe": vectorSeeds(tb, UNSUBSCRIBE, vb),
		"FuzzDecodeUnsuback":    vectorSeeds(tb, UNSUBACK, vb),
		"FuzzDecodeDisconnect":  vectorSeeds(tb, DISCONNECT, vb),
		"FuzzDecodeAuth":        vectorSeeds(tb, AUTH, func(_ byte, b []byte) []any { return []any{body(b)} }),
	}
	var acks []seed
	for _, typ := range []byte{PUBACK, PUBREC, PUBREL, PUBCOMP} {
		acks = append(acks, vectorSeeds(tb, typ, func(v byte, b []byte) []any {
			return []any{versionSeed(v), typ - PUBACK, body(b)}
		})...)
	}
	m["FuzzDecodeAck"] = acks[:min(len(acks), maxSeeds)]
	var ping []seed
	for typ := byte(0); typ < 2; typ++ {
		for _, b := range [][]byte{{}, {0}, {0, 0}, {0xff}, {1, 2, 3}} {
			ping = append(ping, seed{"ping", []any{typ, b}})
		}
	}
	m["FuzzDecodePing"] = ping
	// FuzzReadPacket: one stream per vector (every type, both versions),
	// broken framings, and packets back to back.
	var rp []seed
	vs := allVectors()
	for i := 0; i < len(vs) && len(rp) < maxSeeds-6; i += 2 {
		rp = append(rp, seed{vs[i].name, []any{hx(tb, vs[i].hex)}})
	}
	for _, h := range []string{`30 ffffff7f`, `30 8080808001`, `30 8000`, `00 00`, `62 02 0001`, `c0 00 d0 00 e0 00`} {
		rp = append(rp, seed{"framing " + h, []any{hx(tb, h)}})
	}
	m["FuzzReadPacket"] = rp
	return m
}

func addSeeds(f *testing.F, name string) {
	for _, s := range fuzzSeeds(f)[name] {
		f.Add(s.args...)
	}
}

// bodyOf strips a vector's fixed header.
func bodyOf(b []byte) []byte {
	_, body, _, err := ReadPacket(b, 0)
	if err != nil {
		panic(err)
	}
	return body
}

// FuzzReadPacket frames arbitrary bytes whole and split at every boundary:
// a prefix must give ErrIncomplete (with the same total size once the
// header is complete) or the same result as the whole input. Packets that
// frame are decoded in both versions, and decoded ones must round-trip.
func FuzzReadPacket(f *testing.F) {
	addSeeds(f, "FuzzReadPacket")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, max := range []int{16, 0} {
			checkFraming(t, data, max)
		}
		h, body, _, err := ReadPacket(data, 0)
		if err != nil {
			return
		}
		for _, version := range []byte{Version311, Version5} {
			got, derr := decodeBody(h, body, version)
			if derr != nil {
				if _, ok := derr.(*Error); !ok {
					t.Fatalf("decoder returned %T %v", derr, derr)
				}
				continue
			}
			checkRoundTrip(t, version, got)
		}
	})
}

// checkFraming checks ReadPacket on data whole and on every prefix.
func checkFraming(t *testing.T, data []byte, max int) {
	h, body, n, err := ReadPacket(data, max)
	var e *Error
	switch {
	case err == nil:
		if n != 1+varintLen(h.Remaining)+h.Remaining || n > len(data) || h.Remaining != len(body) {
			t.Fatalf("n=%d len=%d header %+v body %d", n, len(data), h, len(body))
		}
		if cap(body) != len(body) || !bytes.Equal(data[n-len(body):n], body) {
			t.Fatal("body is not the end of the packet, or its capacity extends past it")
		}
		if _, _, _, err := ReadPacket(data, n); err != nil { // the limit is inclusive
			t.Fatalf("max %d: %v", n, err)
		}
		if _, _, m, err := ReadPacket(data, n-1); err != ErrPacketTooLarge || m != n {
			t.Fatalf("max %d: %v n=%d", n-1, err, m)
		}
	case err == ErrIncomplete:
		if n != 0 && (n <= len(data) || n != 1+varintLen(h.Remaining)+h.Remaining) {
			t.Fatalf("incomplete with n=%d, len %d, header %+v", n, len(data), h)
		}
	case err == ErrPacketTooLarge:
		if max <= 0 || n <= max {
			t.Fatalf("too large: n=%d max=%d", n, max)
		}
	case errors.As(err, &e) && e.Code == MalformedPacket:
		if n != 0 {
			t.Fatalf("malformed with n=%d", n)
		}
	default:
		t.Fatalf("unexpected error %v n=%d", err, n)
	}
	for i := 0; i < len(data); i++ {
		ph, pbody, pn, perr := ReadPacket(data[:i], max)
		if perr == ErrIncomplete {
			// A prefix may announce the size only once its header is
			// complete, and then the same header as the whole input.
			if pn != 0 && (pn != n || ph != h) {
				t.Fatalf("prefix %d: incomplete %+v n=%d; whole %+v n=%d %v", i, ph, pn, h, n, err)
			}
			continue
		}
		if perr != err || pn != n || ph != h || !bytes.Equal(pbody, body) {
			t.Fatalf("prefix %d: (%+v, %d, %v), whole (%+v, %d, %v)", i, ph, pn, perr, h, n, err)
		}
	}
}

func fuzzVersion(v byte) byte {
	if v&1 == 1 {
		return Version5
	}
	return Version311
}

func versionSeed(v byte) byte {
	if v == Version5 {
		return 1
	}
	return 0
}

// fuzzDecode runs one decoder on a body and round-trips what it accepts.
func fuzzDecode(t *testing.T, h Header, body []byte, version byte) {
	h.Remaining = len(body)
	orig := append([]byte(nil), body...)
	got, err := decodeBody(h, body, version)
	if !bytes.Equal(orig, body) {
		t.Fatal("decoder modified its input")
	}
	if err != nil {
		if _, ok := err.(*Error); !ok {
			t.Fatalf("decoder returned %T %v", err, err)
		}
		return
	}
	checkRoundTrip(t, version, got)
}

func FuzzDecodeConnect(f *testing.F) {
	addSeeds(f, "FuzzDecodeConnect")
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzDecode(t, Header{Type: CONNECT}, body, 0)
	})
}

func FuzzDecodeConnack(f *testing.F) {
	addSeeds(f, "FuzzDecodeConnack")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: CONNACK}, body, fuzzVersion(version))
	})
}

func FuzzDecodePublish(f *testing.F) {
	addSeeds(f, "FuzzDecodePublish")
	f.Fuzz(func(t *testing.T, version, flags byte, body []byte) {
		fuzzDecode(t, Header{Type: PUBLISH, Flags: flags & 15}, body, fuzzVersion(version))
	})
}

func FuzzDecodeAck(f *testing.F) {
	addSeeds(f, "FuzzDecodeAck")
	f.Fuzz(func(t *testing.T, version, typ byte, body []byte) {
		h := Header{Type: PUBACK + typ&3}
		if h.Type == PUBREL {
			h.Flags = 2
		}
		fuzzDecode(t, h, body, fuzzVersion(version))
	})
}

func FuzzDecodeSubscribe(f *testing.F) {
	addSeeds(f, "FuzzDecodeSubscribe")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: SUBSCRIBE, Flags: 2}, body, fuzzVersion(version))
	})
}

func FuzzDecodeSuback(f *testing.F) {
	addSeeds(f, "FuzzDecodeSuback")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: SUBACK}, body, fuzzVersion(version))
	})
}

func FuzzDecodeUnsubscribe(f *testing.F) {
	addSeeds(f, "FuzzDecodeUnsubscribe")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: UNSUBSCRIBE, Flags: 2}, body, fuzzVersion(version))
	})
}

func FuzzDecodeUnsuback(f *testing.F) {
	addSeeds(f, "FuzzDecodeUnsuback")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: UNSUBACK}, body, fuzzVersion(version))
	})
}

func FuzzDecodeDisconnect(f *testing.F) {
	addSeeds(f, "FuzzDecodeDisconnect")
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		fuzzDecode(t, Header{Type: DISCONNECT}, body, fuzzVersion(version))
	})
}

func FuzzDecodeAuth(f *testing.F) {
	addSeeds(f, "FuzzDecodeAuth")
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzDecode(t, Header{Type: AUTH}, body, Version5)
	})
}

// FuzzDecodePing covers PINGREQ and PINGRESP.
func FuzzDecodePing(f *testing.F) {
	addSeeds(f, "FuzzDecodePing")
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		fuzzDecode(t, Header{Type: PINGREQ + typ&1}, body, Version311)
	})
}
