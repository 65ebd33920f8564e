package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/broker"
)

// refusalLogSink collects a node's log lines.
type refusalLogSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *refusalLogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the lines containing every one of parts.
func (s *refusalLogSink) lines(parts ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func (s *refusalLogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var suppressedRe = regexp.MustCompile(`suppressed_since_last_line=(\d+)`)

// refusalsCounted is how many refusals lines stand for: each line, plus
// the ones it says were held back before it.
func refusalsCounted(t *testing.T, lines []string) int {
	t.Helper()
	n := 0
	for _, l := range lines {
		n++
		if m := suppressedRe.FindStringSubmatch(l); m != nil {
			k, _ := strconv.Atoi(m[1])
			n += k
		}
	}
	return n
}

// storm runs connect for 0..n-1 from 8 goroutines; connect returns an
// error unless it was refused as expected.
func storm(t *testing.T, n int, connect func(i int) error) time.Duration {
	t.Helper()
	start := time.Now()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				errs <- connect(i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return time.Since(start)
}

// seedRefused dials with the seed headers and returns the close frame.
func seedRefused(url, secret, tags string) (ws.StatusCode, string, error) {
	h := http.Header{"Authorization": {"Token " + secret}, "Tag": {tags}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)}.Dial(ctx, url)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(r)
		if err != nil {
			return 0, "", err
		}
		if f.Header.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return code, reason, nil
		}
	}
}

// mqttRefused sends an MQTT 3.1.1 CONNECT and returns the CONNACK's code.
func mqttRefused(addr, clientID, password string) (byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 4, 0xC2, 0, 60) // level 4; user name, password, clean session
	body = append(body, str(clientID)...)
	body = append(body, str("device")...)
	body = append(body, str(password)...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		return 0, err
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return 0, err
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		return 0, fmt.Errorf("not a CONNACK: % x", ack)
	}
	return ack[3], nil
}

// Refused connections are logged at info with their reason, never the
// secret, and sampled: a storm of one kind writes one line per 10 s, which
// counts the refusals it stands for; another kind gets its own line.
func TestRefusalLogSampled(t *testing.T) {
	sink := &refusalLogSink{}
	n := startNodeLogged(t, slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo})))
	tok := n.createToken("fleet", 0)
	n.grant(tok, n.createTag("fleet/#"), "read")
	refusalLog.Reset() // other tests' refusals in this process

	const size = 200
	url := n.seedURL()
	took := storm(t, size, func(i int) error {
		code, reason, err := seedRefused(url, fmt.Sprintf("not-the-secret-%d", i), "fleet/#")
		if err != nil || code != 4003 || reason != "invalid token" {
			return fmt.Errorf("connect %d with a wrong secret: %d %q %v", i, code, reason, err)
		}
		return nil
	})
	took += storm(t, size, func(i int) error {
		code, reason, err := seedRefused(url, tok.Token, "other/#")
		if err != nil || code != 4003 || !strings.HasPrefix(reason, "tag not permitted") {
			return fmt.Errorf("connect %d on a tag not granted: %d %q %v", i, code, reason, err)
		}
		return nil
	})
	// at most one line per cause per interval (and one more when a storm
	// straddles an interval's end)
	bound := 2 + int(took/refusalLogEvery)
	bad := sink.lines("level=INFO", `msg="connection refused"`, "code=4003", "cause=bad_credentials", `reason="invalid token"`)
	denied := sink.lines("level=INFO", `msg="connection refused"`, "code=4003", "cause=not_authorized", `reason="tag not permitted: \"other/#\""`)
	if len(bad) == 0 || len(bad) > bound || len(denied) == 0 || len(denied) > bound {
		t.Fatalf("%d + %d refusal lines for 2 storms of %d in %s, want 1 to %d each:\n%s", len(bad), len(denied), size, took, bound, sink)
	}
	if all := sink.lines(`msg="connection refused"`); len(all) != len(bad)+len(denied) {
		t.Fatalf("refusal lines of other kinds:\n%s", sink)
	}
	if strings.Contains(sink.String(), "not-the-secret") || strings.Contains(sink.String(), tok.Token) {
		t.Fatalf("a secret is in the log:\n%s", sink)
	}
	// once the interval has passed the next line counts the held-back ones
	refusalLog[broker.CauseBadCredentials].Expire()
	if code, _, err := seedRefused(url, "not-the-secret-again", "fleet/#"); err != nil || code != 4003 {
		t.Fatalf("one more refusal: %d %v", code, err)
	}
	bad = sink.lines(`msg="connection refused"`, "cause=bad_credentials")
	if got := refusalsCounted(t, bad); got != size+1 || !strings.Contains(bad[len(bad)-1], "suppressed_since_last_line=") {
		t.Fatalf("the lines stand for %d refusals, want %d:\n%s", got, size+1, strings.Join(bad, "\n"))
	}

	// MQTT: the same, through the adapter's own sampler (one per process:
	// another test may have taken its interval, so wait for it if need be)
	took = storm(t, size, func(i int) error {
		code, err := mqttRefused(n.MQTTAddr(), fmt.Sprintf("storm-%d", i), "not-the-secret")
		if err != nil || code != 4 { // bad user name or password
			return fmt.Errorf("MQTT connect %d with a wrong password: %#x %v", i, code, err)
		}
		return nil
	})
	lines := sink.lines("level=INFO", `msg="mqtt connection refused"`, "cause=bad_credentials", `reason="invalid token"`)
	if len(lines) > 2+int(took/(10*time.Second)) {
		t.Fatalf("%d MQTT refusal lines for a storm of %d in %s:\n%s", len(lines), size, took, sink)
	}
	for deadline := time.Now().Add(15 * time.Second); len(lines) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no MQTT refusal was logged:\n%s", sink)
		}
		time.Sleep(250 * time.Millisecond)
		if _, err := mqttRefused(n.MQTTAddr(), "late", "not-the-secret"); err != nil {
			t.Fatal(err)
		}
		lines = sink.lines("level=INFO", `msg="mqtt connection refused"`, "cause=bad_credentials")
	}
	if strings.Contains(sink.String(), "not-the-secret") {
		t.Fatalf("a password is in the log:\n%s", sink)
	}
}
