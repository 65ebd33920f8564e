package mqtt

import (
	"bytes"
	"errors"
	"testing"
)

func TestReadPacketRemainingLength(t *testing.T) {
	// MQTT 5.0 Table 1-1 (Size of Variable Byte Integer): the boundaries.
	for _, c := range []struct {
		hex string
		rl  int
	}{
		{"00", 0}, {"7f", 127}, {"8001", 128}, {"ff7f", 16383}, {"808001", 16384},
		{"ffff7f", 2097151}, {"80808001", 2097152}, {"ffffff7f", 268435455},
	} {
		hdr := append([]byte{0xc0}, hx(t, c.hex)...)
		if got := appendVarint(nil, c.rl); !bytes.Equal(got, hdr[1:]) {
			t.Errorf("appendVarint(%d) = % x", c.rl, got)
		}
		if varintLen(c.rl) != len(hdr)-1 {
			t.Errorf("varintLen(%d)", c.rl)
		}
		h, _, n, err := ReadPacket(hdr, 0)
		wantErr := error(nil)
		if c.rl > 0 {
			wantErr = ErrIncomplete
		}
		if err != wantErr || h.Remaining != c.rl || h.Type != PINGREQ || n != len(hdr)+c.rl {
			t.Errorf("%s: h=%+v n=%d err=%v", c.hex, h, n, err)
		}
	}
}

func TestReadPacketIncomplete(t *testing.T) {
	b := hx(t, `32 08 0003 "a/b" 000a "x" 3000`) // a packet and the start of another
	for i := 0; i < 10; i++ {
		h, body, n, err := ReadPacket(b[:i], 0)
		if err != ErrIncomplete || body != nil {
			t.Fatalf("prefix %d: err=%v", i, err)
		}
		wantN := 10
		if i < 2 {
			wantN = 0
		}
		if n != wantN {
			t.Fatalf("prefix %d: n=%d want %d", i, n, wantN)
		}
		if i >= 2 && (h.Type != PUBLISH || h.Flags != 2 || h.Remaining != 8) {
			t.Fatalf("prefix %d: header %+v", i, h)
		}
	}
	h, body, n, err := ReadPacket(b, 0)
	if err != nil || n != 10 || !bytes.Equal(body, b[2:10]) || cap(body) != 8 || h.QoS() != 1 || h.Dup() || h.Retain() {
		t.Fatalf("whole: %+v n=%d err=%v body % x cap %d", h, n, err, body, cap(body))
	}
	h, _, n, err = ReadPacket(b[n:], 0)
	if err != nil || n != 2 || h.Type != PUBLISH {
		t.Fatalf("second: %+v %d %v", h, n, err)
	}
}

func TestReadPacketTooLarge(t *testing.T) {
	b := hx(t, `32 08 0003 "a/b" 000a "x"`)
	for _, max := range []int{1, 2, 9} {
		for _, in := range [][]byte{b[:2], b} {
			h, body, n, err := ReadPacket(in, max)
			if err != ErrPacketTooLarge || n != 10 || body != nil || h.Remaining != 8 {
				t.Fatalf("max %d len %d: n=%d err=%v", max, len(in), n, err)
			}
		}
	}
	var e *Error
	if !errors.As(ErrPacketTooLarge, &e) || e.Code != PacketTooLarge {
		t.Fatal("ErrPacketTooLarge is not an *Error with PacketTooLarge")
	}
	if _, _, _, err := ReadPacket(b, 10); err != nil {
		t.Fatal(err)
	}
	// A header announcing 256 MB is refused from its first five bytes.
	if _, _, n, err := ReadPacket(hx(t, "30 ffffff7f"), 1<<20); err != ErrPacketTooLarge || n != MaxPacketSize {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if _, _, n, err := ReadPacket(hx(t, "30 ffffff7f"), 0); err != ErrIncomplete || n != MaxPacketSize {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func TestReadPacketMalformed(t *testing.T) {
	for _, c := range []struct{ name, hex string }{
		{"type 0", "00 00"},
		{"type 0 alone", "0f"},
		{"connect flags", "11 00"},
		{"connack flags", "28 00"},
		{"puback flags", "42 02 0001"},
		{"pubrel flags 0", "60 02 0001"},
		{"pubrel flags 3", "63 02 0001"},
		{"subscribe flags 0", "80 00"},
		{"unsubscribe flags 0", "a0 00"},
		{"pingreq flags", "c1 00"},
		{"disconnect flags", "e8 00"},
		{"auth flags", "f1 00"},
		{"varint 5 bytes", "30 8080808001"},
		{"varint 5 bytes, cut", "30 80808080"},
		{"varint not minimal 2", "30 8000"},
		{"varint not minimal 4", "30 ff808000"},
	} {
		_, _, n, err := ReadPacket(hx(t, c.hex), 0)
		if errCode(err) != MalformedPacket || n != 0 {
			t.Errorf("%s: n=%d err=%v", c.name, n, err)
		}
	}
	// Valid fixed flags for every type are accepted.
	for _, first := range []byte{0x10, 0x20, 0x30, 0x3f, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xa2, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0} {
		if _, _, _, err := ReadPacket([]byte{first, 0}, 0); err != nil {
			t.Errorf("%#x: %v", first, err)
		}
	}
}

func TestValidUTF8String(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"", true}, {"a/b", true}, {"\x01\x1f\x7f", true}, {"é€😀", true},
		{"\uFEFF", true}, {"\uFFFF", true},
		{"\x00", false}, {"é\x00", false}, {"\xff", false}, {"\xc0\x80", false},
		{"\xed\xa0\x80", false}, {"\xed\xbf\xbf", false}, {"\xf4\x90\x80\x80", false}, {"a\xe2\x82", false},
	} {
		if got := ValidUTF8String([]byte(c.s)); got != c.ok {
			t.Errorf("%q: %v", c.s, got)
		}
	}
}

func TestReasonAndTypeNames(t *testing.T) {
	if ReasonString(QuotaExceeded) != "quota exceeded" || ReasonString(0x7e) != "reason code 0x7E" {
		t.Fatal(ReasonString(QuotaExceeded), ReasonString(0x7e))
	}
	if TypeName(PUBLISH) != "PUBLISH" || TypeName(0) != "RESERVED" || TypeName(200) != "RESERVED" {
		t.Fatal("TypeName")
	}
}
