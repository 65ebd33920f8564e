package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gatecast/gatecast/acl/sqlite"
	"github.com/gatecast/gatecast/broker"
)

const testKey = "test-admin-key-0123456789"

// recEnforcer records what the handler asks of the broker. Its hook runs
// inside RefreshTokens, so a test can look at the store (and at what was
// already answered) at the moment enforcement happens.
type recEnforcer struct {
	mu       sync.Mutex
	calls    [][]int64
	err      error
	hook     func(ids []int64)
	conns    []broker.ConnectionInfo
	listed   []int64
	kicked   []uint64
	kickable map[uint64]bool
}

func (e *recEnforcer) RefreshTokens(_ context.Context, ids ...int64) error {
	e.mu.Lock()
	e.calls = append(e.calls, slices.Clone(ids))
	hook, err := e.hook, e.err
	e.mu.Unlock()
	if hook != nil {
		hook(ids)
	}
	return err
}

func (e *recEnforcer) Connections(tokenID int64) []broker.ConnectionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.listed = append(e.listed, tokenID)
	var out []broker.ConnectionInfo
	for _, c := range e.conns {
		if tokenID == 0 || c.TokenID == tokenID {
			out = append(out, c)
		}
	}
	return out
}

func (e *recEnforcer) Kick(id uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.kickable[id] {
		return false
	}
	delete(e.kickable, id)
	e.kicked = append(e.kicked, id)
	return true
}

// takeCalls returns and forgets the recorded refreshes.
func (e *recEnforcer) takeCalls() [][]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.calls
	e.calls = nil
	return c
}

// syncBuffer is a log sink shared by the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is the admin handler over a real SQLite store in a temp dir,
// served by httptest on loopback.
type fixture struct {
	t     *testing.T
	store *sqlite.Store
	enf   *recEnforcer
	logs  *syncBuffer
	srv   *httptest.Server
	h     http.Handler
	cfg   Config
}

func newFixture(t testing.TB, mutate ...func(*Config)) *fixture {
	t.Helper()
	store, err := sqlite.Open(filepath.Join(t.TempDir(), "gatecast.db"))
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{store: store, enf: &recEnforcer{kickable: map[uint64]bool{}}, logs: &syncBuffer{}}
	if tt, ok := t.(*testing.T); ok {
		f.t = tt
	}
	f.cfg = Config{
		Store:    store,
		Enforcer: f.enf,
		Key:      testKey,
		Logger:   slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mutate {
		m(&f.cfg)
	}
	f.h = NewHandler(f.cfg)
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) client() *Client {
	return &Client{BaseURL: f.srv.URL, Key: testKey, HTTP: f.srv.Client()}
}

// call sends a request with the admin key; a non-empty body is sent as JSON.
func (f *fixture) call(method, path, body string) (int, []byte) {
	f.t.Helper()
	return f.callWith(method, path, body, map[string]string{"Authorization": "Bearer " + testKey})
}

func (f *fixture) callWith(method, path, body string, headers map[string]string) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	if len(raw) > 0 && resp.Header.Get("Content-Type") != "application/json" && !strings.HasPrefix(path, "/metrics") {
		f.t.Fatalf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, raw
}

// must requires want and decodes the answer into out (if not nil).
func (f *fixture) must(want int, method, path, body string, out any) []byte {
	f.t.Helper()
	code, raw := f.call(method, path, body)
	if code != want {
		f.t.Fatalf("%s %s %s: HTTP %d %s, want %d", method, path, body, code, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			f.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
	return raw
}

// mustError requires an error answer with status and code.
func (f *fixture) mustError(status int, code, method, path, body string) string {
	f.t.Helper()
	got, raw := f.call(method, path, body)
	return checkError(f.t, got, raw, status, code, method+" "+path+" "+body)
}

func checkError(t *testing.T, got int, raw []byte, status int, code, what string) string {
	t.Helper()
	if got != status {
		t.Fatalf("%s: HTTP %d %s, want %d", what, got, raw, status)
	}
	e, err := parseError(raw)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if e.Error.Code != code {
		t.Fatalf("%s: code %q, want %q (%s)", what, e.Error.Code, code, raw)
	}
	return e.Error.Message
}

// parseError checks the shape {"error":{"code":"…","message":"…"}} and
// nothing else.
func parseError(raw []byte) (errorBody, error) {
	var e errorBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, errors.New("error answer " + string(raw) + " is not {\"error\":{\"code\",\"message\"}}: " + err.Error())
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		return e, errors.New("error answer " + string(raw) + " lacks code or message")
	}
	return e, nil
}

func (f *fixture) createToken(name string, maxConns int) Token {
	f.t.Helper()
	var tok Token
	b, _ := json.Marshal(CreateTokenRequest{Name: name, MaxConnections: maxConns})
	f.must(201, "POST", "/api/v1/tokens", string(b), &tok)
	return tok
}

func (f *fixture) createTag(pattern string) Tag {
	f.t.Helper()
	var tag Tag
	b, _ := json.Marshal(TagRequest{Pattern: pattern})
	f.must(201, "POST", "/api/v1/tags", string(b), &tag)
	return tag
}
