package netpoll

import (
	"strings"
	"testing"
)

func TestCheckRequest(t *testing.T) {
	const ok = "GET /ws/brocker/ HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	cases := []struct {
		name string
		req  string
		want error
	}{
		{"valid", ok + "\r\n", nil},
		{"valid with Content-Length 0", ok + "Content-Length: 0\r\n\r\n", nil},
		{"valid tab in value", ok + "Tag: a,\tb\r\n\r\n", nil},
		{"space before colon", ok + "Authorization : Token abc\r\n\r\n", errReqSpaceColon},
		{"tab before colon", ok + "Authorization\t: Token abc\r\n\r\n", errReqSpaceColon},
		{"two Host headers", ok + "Host: other\r\n\r\n", errReqHost},
		{"no Host", strings.Replace(ok, "Host: example\r\n", "", 1) + "\r\n", errReqHost},
		{"bare CR in value", ok + "Tag: a\rb\r\n\r\n", errReqFieldValue},
		{"NUL in value", ok + "Tag: a\x00b\r\n\r\n", errReqFieldValue},
		{"DEL in value", ok + "Tag: a\x7fb\r\n\r\n", errReqFieldValue},
		{"HTTP/1.2", strings.Replace(ok, "HTTP/1.1", "HTTP/1.2", 1) + "\r\n", errReqVersion},
		{"HTTP/1.0", strings.Replace(ok, "HTTP/1.1", "HTTP/1.0", 1) + "\r\n", errReqVersion},
		{"HTTP/2.0", strings.Replace(ok, "HTTP/1.1", "HTTP/2.0", 1) + "\r\n", errReqVersion},
		{"lower-case version", strings.Replace(ok, "HTTP/1.1", "http/1.1", 1) + "\r\n", errReqLine},
		{"Transfer-Encoding", ok + "Transfer-Encoding: chunked\r\n\r\n", errReqTE},
		{"Transfer-Encoding and Content-Length", ok + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", errReqTE},
		{"Content-Length with a body", ok + "Content-Length: 5\r\n\r\n", errReqCL},
		{"two Content-Length", ok + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n", errReqDuplicateCL},
		{"obsolete folding", ok + "Tag: a\r\n b\r\n\r\n", errReqFolding},
		{"bare LF line end", strings.Replace(ok, "Host: example\r\n", "Host: example\n", 1) + "\r\n", errReqLineEnding},
		{"bare LF terminator", ok + "\n", errReqLineEnding},
		{"no colon", ok + "Tag\r\n\r\n", errReqFieldName},
		{"empty name", ok + ": x\r\n\r\n", errReqFieldName},
		{"separator in name", ok + "Ta(g: x\r\n\r\n", errReqFieldName},
		{"double space in request line", strings.Replace(ok, "GET /", "GET  /", 1) + "\r\n", errReqLine},
		{"control in target", strings.Replace(ok, "/ws/brocker/", "/ws/\x01/", 1) + "\r\n", errReqLine},
		{"trailing bytes", ok + "\r\nextra", errReqLine},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkRequest([]byte(tc.req)); got != tc.want {
				t.Fatalf("checkRequest = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStrictRequestsRefused sends requests gobwas alone would accept and
// checks each gets a 400 with a reason, on a real server.
func TestStrictRequestsRefused(t *testing.T) {
	s, _ := startServer(t, Config{}, newTestHandler())
	reqs := map[string]string{
		"space before colon": "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization : Token a\r\n",
		"two Host":           "GET /ws HTTP/1.1\r\nHost: x\r\nHost: y\r\n",
		"bare CR":            "GET /ws HTTP/1.1\r\nHost: x\r\nTag: a\rb\r\n",
		"HTTP/1.2":           "GET /ws HTTP/1.2\r\nHost: x\r\n",
		"TE and CL":          "GET /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n",
	}
	for name, head := range reqs {
		t.Run(name, func(t *testing.T) {
			req := head + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			resp := httpExchange(t, s, req)
			if !strings.HasPrefix(resp, "HTTP/1.1 400 ") {
				t.Fatalf("response = %q, want a 400 with a reason", resp)
			}
		})
	}
}

func FuzzCheckRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nAuthorization : x\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.2\r\nHost: a\r\nX: a\rb\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkRequest(b) != nil {
			return
		}
		// An accepted request has CRLF line ends only, one Host, no
		// Transfer-Encoding, and ends with the empty line.
		s := string(b)
		if !strings.HasSuffix(s, "\r\n\r\n") || strings.Count(s, "\n") != strings.Count(s, "\r\n") {
			t.Fatalf("accepted %q", s)
		}
		if strings.Contains(strings.ToLower(s), "\ntransfer-encoding:") {
			t.Fatalf("accepted Transfer-Encoding: %q", s)
		}
	})
}
