package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net"
	"sync"
	"time"
)

// Web console sessions. A session is made by signing in with the admin
// key and lives in this node's memory only: sessions are per node (a
// console signed in on node A is not signed in on node B) and a restart
// ends them all. The browser holds the session ID in an HttpOnly,
// SameSite=Strict cookie; the node keeps only its SHA-256, so a memory
// dump or a log line never yields a usable cookie. Each session has a
// CSRF token that every write must echo in X-CSRF-Token.

// Lifetimes and bounds of console sessions.
const (
	// consoleIdleTimeout ends a session nobody used for that long (the live
	// view's automatic polling does not count as use).
	consoleIdleTimeout = 8 * time.Hour
	// consoleMaxLifetime ends a session that long after its sign-in,
	// however busy.
	consoleMaxLifetime = 24 * time.Hour
	// consoleMaxSessions bounds the sessions of one node; signing in past
	// it ends the least recently used one.
	consoleMaxSessions = 256

	// Failed sign-ins: at most consoleLoginFailures per address within
	// consoleLoginWindow, and consoleLoginGlobalFailures from every
	// address together; past either, sign-ins are refused with 429 until
	// the window ends (a right key included: it cannot be told apart
	// without trying it).
	consoleLoginFailures       = 5
	consoleLoginGlobalFailures = 50
	consoleLoginWindow         = time.Minute
	consoleLoginMaxAddrs       = 4096
)

// consoleSession is one signed-in console. Its fields are guarded by
// consoleSessions.mu.
type consoleSession struct {
	idHash   [sha256.Size]byte
	csrf     string
	created  time.Time
	lastUsed time.Time
}

// actor is the session's credential for the audit log: a short hash of
// its ID, enough to tell sessions apart, useless as a cookie.
func (s *consoleSession) actor() string {
	return "console:" + hex.EncodeToString(s.idHash[:6])
}

// expiresAt is when the session ends if it is not used again.
func (s *consoleSession) expiresAt() time.Time {
	idle := s.lastUsed.Add(consoleIdleTimeout)
	if abs := s.created.Add(consoleMaxLifetime); abs.Before(idle) {
		return abs
	}
	return idle
}

// consoleView is what the handler learns of a session it looked up: a
// copy, safe to read without the lock.
type consoleView struct {
	actor     string
	csrf      string
	created   time.Time
	expiresAt time.Time
}

// consoleSessions is the node's session table and its sign-in limiter,
// safe for concurrent use.
type consoleSessions struct {
	now func() time.Time // time.Now; tests move it

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]*consoleSession

	// failed sign-ins in the current window, per address and in all
	failMu     sync.Mutex
	failWindow time.Time
	failByAddr map[string]int
	failGlobal int
}

func newConsoleSessions() *consoleSessions {
	return &consoleSessions{
		now:        time.Now,
		sessions:   map[[sha256.Size]byte]*consoleSession{},
		failByAddr: map[string]int{},
	}
}

// randomToken is 32 random bytes, base64url without padding.
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// create makes a session and returns its ID (the cookie's value, shown
// nowhere else) and a view of it.
func (c *consoleSessions) create() (id string, v consoleView, err error) {
	id, err = randomToken()
	if err != nil {
		return "", v, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", v, err
	}
	now := c.now()
	s := &consoleSession{idHash: sha256.Sum256([]byte(id)), csrf: csrf, created: now, lastUsed: now}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	for len(c.sessions) >= consoleMaxSessions {
		var oldest *consoleSession
		for _, o := range c.sessions {
			if oldest == nil || o.lastUsed.Before(oldest.lastUsed) {
				oldest = o
			}
		}
		delete(c.sessions, oldest.idHash)
	}
	c.sessions[s.idHash] = s
	return id, viewOf(s), nil
}

func viewOf(s *consoleSession) consoleView {
	return consoleView{actor: s.actor(), csrf: s.csrf, created: s.created, expiresAt: s.expiresAt()}
}

// pruneLocked drops expired sessions. Caller holds mu.
func (c *consoleSessions) pruneLocked(now time.Time) {
	for k, s := range c.sessions {
		if !now.Before(s.expiresAt()) {
			delete(c.sessions, k)
		}
	}
}

// lookup finds the live session with this ID; touch marks it used (its
// idle time starts again). An expired session is removed.
func (c *consoleSessions) lookup(id string, touch bool) (consoleView, bool) {
	if id == "" || len(id) > 128 {
		return consoleView{}, false
	}
	key := sha256.Sum256([]byte(id))
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[key]
	if !ok {
		return consoleView{}, false
	}
	if !now.Before(s.expiresAt()) {
		delete(c.sessions, key)
		return consoleView{}, false
	}
	if touch {
		s.lastUsed = now
	}
	return viewOf(s), true
}

// remove ends the session with this ID (logout); false if there was none.
func (c *consoleSessions) remove(id string) bool {
	key := sha256.Sum256([]byte(id))
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.sessions[key]
	delete(c.sessions, key)
	return ok
}

// count is the number of live sessions.
func (c *consoleSessions) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(c.now())
	return len(c.sessions)
}

// csrfMatches compares a presented CSRF token with the session's in
// constant time.
func csrfMatches(v consoleView, presented string) bool {
	if presented == "" || v.csrf == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(presented)), sha256.Sum256([]byte(v.csrf))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// addrKey is the part of a remote address the limiter counts by: the IP
// (an IPv6 client by its /64, which one host usually holds whole).
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return ip.String()
}

// rollLocked starts a new failure window when the current one is over.
// Caller holds failMu.
func (c *consoleSessions) rollLocked(now time.Time) {
	if now.Sub(c.failWindow) >= consoleLoginWindow {
		c.failWindow = now
		c.failGlobal = 0
		clear(c.failByAddr)
	}
}

// loginBlocked reports whether sign-ins from remote are refused now, and
// for how long.
func (c *consoleSessions) loginBlocked(remote string) (bool, time.Duration) {
	now := c.now()
	c.failMu.Lock()
	defer c.failMu.Unlock()
	c.rollLocked(now)
	if c.failGlobal >= consoleLoginGlobalFailures || c.failByAddr[addrKey(remote)] >= consoleLoginFailures {
		return true, c.failWindow.Add(consoleLoginWindow).Sub(now)
	}
	return false, 0
}

// loginFailed counts a failed sign-in from remote.
func (c *consoleSessions) loginFailed(remote string) {
	now := c.now()
	c.failMu.Lock()
	defer c.failMu.Unlock()
	c.rollLocked(now)
	c.failGlobal++
	k := addrKey(remote)
	if _, ok := c.failByAddr[k]; ok || len(c.failByAddr) < consoleLoginMaxAddrs {
		c.failByAddr[k]++
	}
}

// loginSucceeded forgets the failures of remote.
func (c *consoleSessions) loginSucceeded(remote string) {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	delete(c.failByAddr, addrKey(remote))
}
