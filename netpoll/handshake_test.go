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
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, Subprotocols: []string{"mqtt"},
		CaptureHeaders: []string{"Tag", "x-device"}}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	u := newUpgrader(s).(*upgrader)
	if err := u.onRequest([]byte("/ws?a=1")); err != nil {
		t.Fatal(err)
	}
	_ = u.onHeader([]byte("Tag"), []byte("a/b"))
	_ = u.onHeader([]byte("Authorization"), []byte("Token one"))
	_ = u.onHeader([]byte("X-Device"), []byte("d1"))
	_ = u.onHeader([]byte("Tag"), []byte("c/d"))                 // not adjacent: moved, then joined
	_ = u.onHeader([]byte("Authorization"), []byte("Token two")) // the first one wins
	_ = u.onHeader([]byte("X-Device"), []byte("d2"))
	_ = u.onHeader([]byte("X-Other"), []byte("ignored"))
	sel, ok := u.onProtocol([]byte("chat, mqtt"))
	if !ok || sel != "mqtt" {
		t.Fatalf("selected %q", sel)
	}
	got := map[string]string{
		"path":  string(u.path.of(u.arena)),
		"query": string(u.query.of(u.arena)),
		"auth":  string(u.auth.of(u.arena)),
		"tag":   string(u.headers[0].of(u.arena)),
		"dev":   string(u.headers[1].of(u.arena)),
		"proto": string(u.offers.of(u.arena)),
	}
	want := map[string]string{"path": "/ws", "query": "a=1", "auth": "Token one", "tag": "a/b,c/d", "dev": "d1,d2", "proto": "chat, mqtt"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if err := u.onRequest([]byte("/other")); err == nil {
		t.Error("unknown path accepted")
	}
}

// TestUpgradeCaptureAllocs: capturing an upgrade request's path, query,
// Authorization, the configured headers and the subprotocol offer
// allocates nothing once the pooled upgrader is warm; gobwas's parser
// allocates once itself (the Sec-WebSocket-Accept digest, writeAccept).
func TestUpgradeCaptureAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws", "/mqtt"}, Subprotocols: []string{"mqtt"},
		CaptureHeaders: []string{"Tag", "X-Device"}}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	req := []byte(upgradeRequest("/mqtt?x=1", "Authorization: Token abc\r\nTag: a/b\r\nX-Device: d1\r\nTag: c/d\r\nSec-WebSocket-Protocol: chat, mqtt\r\n"))
	var hs *Handshake
	run := func() {
		u := s.upgrades.Get().(*upgrader)
		u.in.Reset(req)
		wsh, err := u.u.Upgrade(u)
		if err != nil {
			t.Fatal(err)
		}
		hs = u.handshake(wsh.Protocol, "127.0.0.1:1")
		if string(hs.Headers[0]) != "a/b,c/d" || string(hs.Headers[1]) != "d1" || hs.Subprotocol != "mqtt" || string(hs.Path) != "/mqtt" {
			t.Fatalf("captured %q %q, subprotocol %q, path %q", hs.Headers[0], hs.Headers[1], hs.Subprotocol, hs.Path)
		}
		u.reset()
		s.upgrades.Put(u)
	}
	for range 10 {
		run()
	}
	const gobwasAccept = 1
	if n := testing.AllocsPerRun(1000, run); n > gobwasAccept {
		t.Fatalf("upgrade capture: %v allocations, want at most %d (gobwas's own)", n, gobwasAccept)
	}
}
