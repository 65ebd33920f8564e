package mqtt

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// checkTopicNameBytewise is checkTopicName without its word-at-a-time fast
// path: the reference it must agree with.
func checkTopicNameBytewise(b []byte, wildcard *Error) *Error {
	if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		return errBadUTF8
	}
	if bytes.ContainsAny(b, "+#") {
		return wildcard
	}
	return nil
}

// The word-at-a-time topic check agrees with a byte-wise one for every
// placement of each kind of byte it must notice, in topics of 0 to 40
// bytes (so every word and the overlapping last one are exercised).
func TestCheckTopicNameWords(t *testing.T) {
	specials := []string{"\x00", "+", "#", "\x7f", "\x80", "é", "\xff", "*", "/", ",", "*", "\x01", "\xc3"}
	for n := 0; n <= 40; n++ {
		base := bytes.Repeat([]byte("a/"), 21)[:n]
		if got, want := checkTopicName(base, errTopicWildcard), checkTopicNameBytewise(base, errTopicWildcard); got != want {
			t.Fatalf("%q: %v, want %v", base, got, want)
		}
		for i := 0; i < n; i++ {
			for _, sp := range specials {
				b := append(append(append([]byte(nil), base[:i]...), sp...), base[i:]...)
				if got, want := checkTopicName(b, errTopicWildcard), checkTopicNameBytewise(b, errTopicWildcard); got != want {
					t.Fatalf("%q: %v, want %v", b, got, want)
				}
			}
		}
	}
}

func BenchmarkCheckTopicName(b *testing.B) {
	topic := []byte("bench/fanin/123")
	for b.Loop() {
		if checkTopicName(topic, errTopicWildcard) != nil {
			b.Fatal("invalid")
		}
	}
}
