package netpoll

import (
	"bytes"
	"testing"
)

// referenceHeaderEnd is the offset just past the first blank line: an LF
// followed by LF or by CR LF (so CRLF CRLF, LF LF and mixtures).
func referenceHeaderEnd(b []byte) int {
	best := -1
	for _, pat := range [][]byte{[]byte("\n\n"), []byte("\n\r\n")} {
		if i := bytes.Index(b, pat); i >= 0 && (best < 0 || i+len(pat) < best) {
			best = i + len(pat)
		}
	}
	return best
}

// FuzzScanHeaderEnd: scanning in two pieces (carrying the state) finds the
// same end as scanning at once, and both match the reference.
func FuzzScanHeaderEnd(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nframe"), uint16(20))
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"), uint16(3))
	f.Add([]byte("a\r\n\r\r\n\n"), uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		want := referenceHeaderEnd(data)
		whole, _ := scanHeaderEnd(0, data)
		if whole != want {
			t.Fatalf("whole scan %d, reference %d", whole, want)
		}
		k := int(split) % (len(data) + 1)
		end, state := scanHeaderEnd(0, data[:k])
		if end < 0 {
			if end2, _ := scanHeaderEnd(state, data[k:]); end2 >= 0 {
				end = k + end2
			}
		}
		if end != want {
			t.Fatalf("split at %d: %d, reference %d", k, end, want)
		}
	})
}

// TestUpgraderCapture checks the arena bookkeeping for repeated headers.
func TestUpgraderCapture(t *testing.T) {
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, Subprotocols: []string{"mqtt"}}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	u := newUpgrader(s).(*upgrader)
	if err := u.onRequest([]byte("/ws?a=1")); err != nil {
		t.Fatal(err)
	}
	_ = u.onHeader([]byte("Tag"), []byte("a/b"))
	_ = u.onHeader([]byte("Authorization"), []byte("Token one"))
	_ = u.onHeader([]byte("Tag"), []byte("c/d"))                 // not adjacent: moved, then joined
	_ = u.onHeader([]byte("Authorization"), []byte("Token two")) // the first one wins
	sel, ok := u.onProtocol([]byte("chat, mqtt"))
	if !ok || sel != "mqtt" {
		t.Fatalf("selected %q", sel)
	}
	got := map[string]string{
		"path":  string(u.path.of(u.arena)),
		"query": string(u.query.of(u.arena)),
		"auth":  string(u.auth.of(u.arena)),
		"tag":   string(u.tag.of(u.arena)),
		"proto": string(u.offers.of(u.arena)),
	}
	want := map[string]string{"path": "/ws", "query": "a=1", "auth": "Token one", "tag": "a/b,c/d", "proto": "chat, mqtt"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if err := u.onRequest([]byte("/other")); err == nil {
		t.Error("unknown path accepted")
	}
}
