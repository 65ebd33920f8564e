package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// testNode runs a real node on loopback ports chosen by the kernel.
type testNode struct {
	*Node
	t     *testing.T
	relay *relay // the relay it advertises as its admin address, if any
}

func startNode(t *testing.T, mutate ...func(*Config)) *testNode {
	t.Helper()
	return startNodeLogged(t, nil, mutate...)
}

// startNodeLogged is startNode with the node's logger (nil discards).
func startNodeLogged(t *testing.T, log *slog.Logger, mutate ...func(*Config)) *testNode {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.CloseTimeout = 500 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	n, err := Start(cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testNode{Node: n, t: t}
}

// api calls the admin API and decodes the JSON answer into out (if not nil).
func (n *testNode) api(method, path string, body any, out any) int {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.AdminAddr()+path, rd)
	req.Header.Set("Authorization", "Bearer "+n.AdminKey())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// mustAPI is api that requires a 2xx answer.
func (n *testNode) mustAPI(method, path string, body any, out any) {
	n.t.Helper()
	var raw json.RawMessage
	code := n.api(method, path, body, &raw)
	if code/100 != 2 {
		n.t.Fatalf("%s %s: HTTP %d %s", method, path, code, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

type tokenOut struct {
	ID             int64  `json:"id"`
	Name           string `json:"name"`
	MaxConnections int    `json:"max_connections"`
	Token          string `json:"token"`
}

type tagOut struct {
	ID      int64  `json:"id"`
	Pattern string `json:"pattern"`
}

func (n *testNode) createToken(name string, maxConns int) tokenOut {
	var tok tokenOut
	n.mustAPI("POST", "/api/v1/tokens", map[string]any{"name": name, "max_connections": maxConns}, &tok)
	if tok.Token == "" || tok.ID == 0 {
		n.t.Fatalf("create token: %+v", tok)
	}
	return tok
}

func (n *testNode) createTag(pattern string) tagOut {
	var tag tagOut
	n.mustAPI("POST", "/api/v1/tags", map[string]any{"pattern": pattern}, &tag)
	return tag
}

func (n *testNode) grant(tok tokenOut, tag tagOut, perm string) {
	n.mustAPI("PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), map[string]any{"permission": perm}, nil)
}

// client is a seed-protocol WebSocket client.
type client struct {
	t    *testing.T
	conn net.Conn
	// r reads what the server sent: bytes the dialer buffered while reading
	// the 101 response (a rejection close frame arrives in the same
	// segment), then the connection.
	r io.Reader
}

func (n *testNode) seedURL() string { return "ws://" + n.WSAddr() + "/ws/brocker/" }

// dial connects with the given raw handshake headers ("" values are omitted).
func (n *testNode) dialHeaders(t *testing.T, rawURL string, headers map[string]string) *client {
	t.Helper()
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)}.Dial(ctx, rawURL)
	if err != nil {
		t.Fatalf("dial %s: %v", rawURL, err)
	}
	c := &client{t: t, conn: conn, r: conn}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	t.Cleanup(func() { conn.Close() })
	return c
}

// dial connects the way seed clients do: Authorization: Token …, Tag: a,b.
func (n *testNode) dial(t *testing.T, secret string, tags ...string) *client {
	t.Helper()
	return n.dialHeaders(t, n.seedURL(), map[string]string{
		"Authorization": "Token " + secret,
		"Tag":           strings.Join(tags, ","),
	})
}

// dialQuery connects the way a browser does: ?token=…&tags=….
func (n *testNode) dialQuery(t *testing.T, secret string, tags ...string) *client {
	t.Helper()
	q := url.Values{"token": {secret}, "tags": {strings.Join(tags, ",")}}
	return n.dialHeaders(t, n.seedURL()+"?"+q.Encode(), nil)
}

// dialOK connects and proves the session was admitted: the broker answers
// a ping, where a refused connection gets a close frame first.
func (n *testNode) dialOK(t *testing.T, secret string, tags ...string) *client {
	t.Helper()
	c := n.dial(t, secret, tags...)
	c.expectOpen()
	return c
}

func (c *client) publish(tag string, message string) {
	c.t.Helper()
	frame := fmt.Sprintf(`{"tag":%q,"message":%s}`, tag, message)
	c.sendText(frame)
}

func (c *client) sendText(s string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.conn, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// event is what a client read: a text message, or the broker's close frame.
type event struct {
	text   string
	pong   bool
	closed bool
	code   ws.StatusCode
	reason string
	err    error
}

// next reads the next message or close frame, answering pings (as every
// WebSocket client library does).
func (c *client) next(timeout time.Duration) event {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return event{err: err}
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return event{err: err}
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			return event{text: string(payload)}
		case ws.OpPong:
			return event{pong: true}
		case ws.OpPing:
			_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, payload)
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			return event{closed: true, code: code, reason: reason}
		}
	}
}

// expectMessage reads one message and checks tag and message.
func (c *client) expectMessage(tag, message string) {
	c.t.Helper()
	ev := c.next(5 * time.Second)
	if ev.err != nil || ev.closed || ev.pong {
		c.t.Fatalf("want message on %s, got %+v", tag, ev)
	}
	var m struct {
		Tag     string          `json:"tag"`
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal([]byte(ev.text), &m); err != nil {
		c.t.Fatalf("frame %q is not JSON: %v", ev.text, err)
	}
	if m.Tag != tag || string(m.Message) != message {
		c.t.Fatalf("got tag=%q message=%s, want tag=%q message=%s", m.Tag, m.Message, tag, message)
	}
}

// expectClose reads until the close frame and checks its code.
func (c *client) expectClose(code ws.StatusCode) string {
	c.t.Helper()
	for {
		ev := c.next(5 * time.Second)
		if ev.err != nil {
			c.t.Fatalf("want close %d, got error %v", code, ev.err)
		}
		if ev.closed {
			if ev.code != code {
				c.t.Fatalf("want close %d, got %d %q", code, ev.code, ev.reason)
			}
			return ev.reason
		}
	}
}

// expectOpen proves the connection was admitted: the broker answers a ping
// (a rejected connection gets a close frame first).
func (c *client) expectOpen() {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, ws.OpPing, []byte("alive?")); err != nil {
		c.t.Fatalf("ping: %v", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			c.t.Fatalf("want pong, got %v", err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			c.t.Fatalf("want pong, got %v", err)
		}
		switch h.OpCode {
		case ws.OpPong:
			if string(payload) == "alive?" {
				return
			}
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			c.t.Fatalf("connection refused: %d %q", code, reason)
		case ws.OpText:
			c.t.Fatalf("unexpected message before pong: %s", payload)
		}
	}
}

// closeNormally sends a close frame, as a polite client does.
func (c *client) closeNormally() {
	_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
	c.conn.Close()
}

// eventually polls cond until it holds (state changes that are not
// observable by a blocking read, such as a freed connection slot).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ping sends a ping frame.
func (c *client) ping() error {
	return wsutil.WriteClientMessage(c.conn, ws.OpPing, []byte("alive?"))
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// syncWriter serializes writes of concurrent loggers into one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
