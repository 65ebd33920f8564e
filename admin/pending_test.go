package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// blockingEnforcer's RefreshTokens blocks until release is closed, like a
// broker whose enforcement is held up (issue 9, finding 2: a token holder
// kept the disable waiting for 77 s and the admin client timed out).
type blockingEnforcer struct {
	*recEnforcer
	release chan struct{}

	mu      sync.Mutex
	started chan struct{} // one value per RefreshTokens call
	ctxs    []context.Context
	ended   []error
	endedCh chan struct{}
}

func newBlockingEnforcer(rec *recEnforcer) *blockingEnforcer {
	return &blockingEnforcer{recEnforcer: rec, release: make(chan struct{}),
		started: make(chan struct{}, 100), endedCh: make(chan struct{}, 100)}
}

func (b *blockingEnforcer) RefreshTokens(ctx context.Context, ids ...int64) error {
	b.mu.Lock()
	b.ctxs = append(b.ctxs, ctx)
	b.mu.Unlock()
	b.started <- struct{}{}
	<-b.release
	err := ctx.Err() // what a real enforcement would fail with, were it canceled
	if err == nil {
		err = b.recEnforcer.RefreshTokens(ctx, ids...)
	}
	b.mu.Lock()
	b.ended = append(b.ended, err)
	b.mu.Unlock()
	b.endedCh <- struct{}{}
	return err
}

// A rights change whose enforcement outlasts the deadline is answered 202
// pending (saved, still running) instead of keeping the caller waiting past
// its timeout; the enforcement is not canceled when the request ends, it
// completes, and it holds the write lock until then.
func TestSlowEnforcementAnswersPending(t *testing.T) {
	type route struct {
		name, method, path, body string
		result                   []string // fields of "result"; nil: none
	}
	for _, rt := range []func(tok Token, tag Tag) route{
		func(tok Token, tag Tag) route {
			return route{"disable", "PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{"disabled":true}`, []string{"id", "name", "max_connections", "disabled", "created_at", "weak_secret"}}
		},
		func(tok Token, tag Tag) route {
			return route{"rotate", "POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), ``, []string{"id", "name", "max_connections", "disabled", "created_at", "weak_secret", "token"}}
		},
		func(tok Token, tag Tag) route {
			return route{"delete token", "DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), ``, nil}
		},
		func(tok Token, tag Tag) route {
			return route{"downgrade", "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"read"}`, []string{"tag_id", "pattern", "permission"}}
		},
		func(tok Token, tag Tag) route {
			return route{"revoke", "DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), ``, nil}
		},
		func(tok Token, tag Tag) route {
			return route{"tag change", "PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID), `{"pattern":"elsewhere/#"}`, []string{"id", "pattern"}}
		},
		func(tok Token, tag Tag) route {
			return route{"tag delete", "DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), ``, nil}
		},
	} {
		var blk *blockingEnforcer
		f := newFixture(t, func(c *Config) {
			blk = newBlockingEnforcer(c.Enforcer.(*recEnforcer))
			c.Enforcer = blk
			c.EnforceDeadline = time.Millisecond // the enforcement below blocks until released
		})
		tok := f.createToken("slow", 0)
		tag := f.createTag("slow/#")
		if err := f.store.SetPermission(t.Context(), tok.ID, tag.ID, acl.PermReadWrite); err != nil {
			t.Fatal(err)
		}
		rq := rt(tok, tag)

		code, raw := f.call(rq.method, rq.path, rq.body)
		if code != http.StatusAccepted {
			close(blk.release)
			t.Fatalf("%s: HTTP %d %s, want 202", rq.name, code, raw)
		}
		var p struct {
			Status           string                     `json:"status"`
			Message          string                     `json:"message"`
			TokenIDs         []int64                    `json:"token_ids"`
			UnconfirmedNodes []string                   `json:"unconfirmed_nodes"`
			Result           map[string]json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if p.Status != "pending" || p.Message != "the change is saved; enforcement on live sessions is still running" ||
			!slices.Equal(p.TokenIDs, []int64{tok.ID}) || p.UnconfirmedNodes != nil {
			t.Fatalf("%s: 202 body %s", rq.name, raw)
		}
		var fields []string
		for k := range p.Result {
			fields = append(fields, k)
		}
		slices.Sort(fields)
		want := slices.Clone(rq.result)
		slices.Sort(want)
		if !slices.Equal(fields, want) {
			t.Fatalf("%s: result fields %v, want %v (%s)", rq.name, fields, want, raw)
		}
		if rq.name == "rotate" { // the new secret is in the 202: it is saved and shown nowhere else
			var secret string
			json.Unmarshal(p.Result["token"], &secret)
			got, _ := f.store.GetToken(t.Context(), tok.ID)
			if got.Hash != acl.HashSecret([]byte(secret)) {
				t.Fatal("rotate: the 202's secret is not the saved one")
			}
		}
		// The answer is out, the request is over: the enforcement goes on
		// with a live context, and holds the write lock.
		<-blk.started
		blk.mu.Lock()
		ctxErr := blk.ctxs[0].Err()
		blk.mu.Unlock()
		if ctxErr != nil {
			t.Fatalf("%s: the enforcement's context ended with the request: %v", rq.name, ctxErr)
		}
		f.h.(*handler).lockWait.Store(int64(time.Millisecond))
		msg := f.mustError(503, "unavailable", "PATCH", fmt.Sprintf("/api/v1/tokens/%d", f.createToken("other", 0).ID), `{"max_connections":2}`)
		if !strings.Contains(msg, "still being enforced") || !strings.Contains(msg, "nothing was changed") {
			t.Fatalf("%s: lock refusal %q", rq.name, msg)
		}
		// released: it completes, successfully, and the lock is free again
		close(blk.release)
		<-blk.endedCh
		blk.mu.Lock()
		ended := slices.Clone(blk.ended)
		blk.mu.Unlock()
		if len(ended) != 1 || ended[0] != nil {
			t.Fatalf("%s: enforcement ended with %v", rq.name, ended)
		}
		if calls := f.enf.takeCalls(); len(calls) != 1 || !slices.Equal(calls[0], []int64{tok.ID}) {
			t.Fatalf("%s: enforced %v", rq.name, calls)
		}
		f.h.(*handler).lockWait.Store(int64(time.Minute))
		f.must(201, "POST", "/api/v1/tags", `{"pattern":"after/#"}`, nil)
		// The lock is free: the next write goes through (200, or 202 when
		// its own 1 ms deadline passes first on a loaded machine — not 503).
		if code, body := f.call("PATCH", fmt.Sprintf("/api/v1/tokens/%d", f.createToken("third", 0).ID), `{"max_connections":3}`); code != 200 && code != 202 {
			t.Fatalf("%s: write after release: HTTP %d %s", rq.name, code, body)
		}
		// and says so in the log
		waitFor(t, func() bool { return strings.Contains(f.logs.String(), "rights change enforced after its 202 answer") })
		if !strings.Contains(f.logs.String(), "enforcement=pending") {
			t.Fatalf("%s: the audit line does not say pending:\n%s", rq.name, f.logs)
		}
	}
}

// waitFor polls cond: for events that follow an answer without a signal
// the test can wait on (a log line written after the enforcement ends).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// An enforcement that ends within the deadline answers as before; one that
// fails after the 202 is logged as a failure.
func TestEnforcementDeadlineKeepsFastAnswers(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.EnforceDeadline = time.Hour })
	tok := f.createToken("fast", 0)
	var out Token
	f.must(200, "PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{"max_connections":4}`, &out)
	if out.MaxConnections != 4 {
		t.Fatalf("answer %+v", out)
	}
	if h := NewHandler(Config{Store: f.store, Enforcer: f.enf}).(*handler); h.enforceDeadline != DefaultEnforceDeadline {
		t.Fatalf("default deadline %s", h.enforceDeadline)
	}

	var blk *blockingEnforcer
	g := newFixture(t, func(c *Config) {
		blk = newBlockingEnforcer(c.Enforcer.(*recEnforcer))
		c.Enforcer = blk
		c.EnforceDeadline = time.Millisecond
	})
	tok = g.createToken("failing", 0)
	g.enf.err = fmt.Errorf("store: connection refused")
	if code, raw := g.call("PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{"disabled":true}`); code != 202 {
		t.Fatalf("HTTP %d %s", code, raw)
	}
	close(blk.release)
	<-blk.endedCh
	waitFor(t, func() bool { return strings.Contains(g.logs.String(), "failed after its 202 answer") })
}

// The cluster barrier's 202 keeps its shape (unconfirmed_nodes) and now
// also carries the result and the token IDs.
func TestBarrierPendingShape(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	f.enf.err = &PendingError{Nodes: []string{"node-b-1f2e3d"}}
	code, raw := f.call("POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), "")
	var p struct {
		Status           string   `json:"status"`
		Message          string   `json:"message"`
		UnconfirmedNodes []string `json:"unconfirmed_nodes"`
		TokenIDs         []int64  `json:"token_ids"`
		Result           Token    `json:"result"`
	}
	json.Unmarshal(raw, &p)
	if code != 202 || p.Status != "pending" || !slices.Equal(p.UnconfirmedNodes, []string{"node-b-1f2e3d"}) ||
		!strings.Contains(p.Message, "saved") || !slices.Equal(p.TokenIDs, []int64{tok.ID}) || p.Result.ID != tok.ID || p.Result.Secret == "" {
		t.Fatalf("HTTP %d %s", code, raw)
	}
	// the client returns the result with a *PendingChangeError
	got, err := f.client().RotateToken(t.Context(), tok.ID)
	pe, ok := err.(*PendingChangeError)
	if !ok || !slices.Equal(pe.UnconfirmedNodes, []string{"node-b-1f2e3d"}) || got.Secret == "" || got.ID != tok.ID {
		t.Fatalf("client: %+v, %#v", got, err)
	}
	if !strings.Contains(err.Error(), "node-b-1f2e3d") || !strings.Contains(err.Error(), "202") {
		t.Fatalf("client error %q", err)
	}
}

// The CLI reports a 202 clearly: the result as usual (a rotated secret
// included), a warning on stderr, exit status 3.
func TestCLIReportsPending(t *testing.T) {
	var blk *blockingEnforcer
	f := newFixture(t, func(c *Config) {
		blk = newBlockingEnforcer(c.Enforcer.(*recEnforcer))
		c.Enforcer = blk
		c.EnforceDeadline = time.Millisecond
	})
	defer close(blk.release)
	tok := f.createToken("dev", 0)
	full := []string{"--admin-url", f.srv.URL, "--admin-key", testKey, "token", "rotate", "dev"}
	code, out, errOut := f.cliRun(nil, full...)
	if code != 3 || !strings.Contains(out, "rotated token") || !strings.Contains(out, "secret: gc_") ||
		!strings.Contains(errOut, "the change is saved; enforcement on live sessions is still running") || !strings.Contains(errOut, "202") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	secret := strings.TrimSpace(out[strings.Index(out, "secret: ")+len("secret: "):])
	secret, _, _ = strings.Cut(secret, "\n")
	if got, _ := f.store.GetToken(t.Context(), tok.ID); got.Hash != acl.HashSecret([]byte(secret)) {
		t.Fatal("the CLI printed another secret than the saved one")
	}
	<-blk.started
}

// The admin listener's answer comes well within its write timeout (2
// minutes, server.go) and the client waits longer than that.
func TestTimeoutsNest(t *testing.T) {
	const listenerWriteTimeout = 2 * time.Minute
	answerBound := writeLockWait + storeTimeout + DefaultEnforceDeadline
	if answerBound >= listenerWriteTimeout || readTimeout >= listenerWriteTimeout || ClientTimeout <= listenerWriteTimeout {
		t.Fatalf("write answers within %s, reads %s, listener %s, client %s", answerBound, readTimeout, listenerWriteTimeout, ClientTimeout)
	}
	if defaultHTTP.Timeout != ClientTimeout {
		t.Fatal("the default client does not use ClientTimeout")
	}
}
