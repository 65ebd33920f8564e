package testserver

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
		redisErr bool
	}{
		{in: "+PONG\r\n", want: "PONG"},
		{in: ":42\r\n", want: "42"},
		{in: "$5\r\nhello\r\n", want: "hello"},
		{in: "$0\r\n\r\n", want: ""},
		{in: "$-1\r\n", want: ""},
		{in: "-MOVED 3999 127.0.0.1:6381\r\n", err: true, redisErr: true},
		{in: "$5\r\nhel", err: true},         // truncated
		{in: "$5\r\nhelloXY", err: true},     // no CRLF after the body
		{in: "$-2\r\n", err: true},           // bad length
		{in: "$99999999999\r\n", err: true},  // absurd length
		{in: "*1\r\n$1\r\na\r\n", err: true}, // arrays unsupported
		{in: "\r\n", err: true},
		{in: "", err: true},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		var re redisError
		if (err != nil) != tc.err || got != tc.want || errors.As(err, &re) != tc.redisErr {
			t.Errorf("readReply(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// FuzzReadReply: no reply, however malformed, panics the decoder or makes
// it return more bytes than it was given.
func FuzzReadReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readReply(bufio.NewReader(strings.NewReader(string(in))))
		if err == nil && len(got) > len(in) {
			t.Fatalf("decoded %d bytes from %d", len(got), len(in))
		}
	})
}
