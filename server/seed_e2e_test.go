package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// fleet is a node with one readwrite token on sensors/# and alerts/#, and a
// read-only token on sensors/#.
type fleet struct {
	*testNode
	rw, ro         tokenOut
	sensors, alert tagOut
}

func newFleet(t *testing.T) *fleet {
	n := startNode(t)
	f := &fleet{testNode: n}
	f.rw = n.createToken("writer", 0)
	f.ro = n.createToken("reader", 0)
	f.sensors = n.createTag("sensors/#")
	f.alert = n.createTag("alerts/#")
	n.grant(f.rw, f.sensors, "readwrite")
	n.grant(f.rw, f.alert, "readwrite")
	n.grant(f.ro, f.sensors, "read")
	return f
}

// Seed defect 1: wildcard subscribers receive; exact subscribers too; the
// publisher does not get its own message.
func TestSeedWildcardDeliveryNoEcho(t *testing.T) {
	f := newFleet(t)
	wild := f.dialOK(t, f.ro.Token, "sensors/+/temp")
	hash := f.dialOK(t, f.ro.Token, "sensors/#")
	exact := f.dialOK(t, f.ro.Token, "sensors/room1/temp")
	other := f.dialOK(t, f.ro.Token, "sensors/room2/temp")
	pub := f.dialOK(t, f.rw.Token, "sensors/room1/temp")

	pub.publish("sensors/room1/temp", `{"c":21.5}`)
	for _, c := range []*client{wild, hash, exact} {
		c.expectMessage("sensors/room1/temp", `{"c":21.5}`)
	}
	// A second publisher's message is the first thing the first publisher
	// and the non-matching subscriber see: no echo, no misrouting.
	pub2 := f.dialOK(t, f.rw.Token, "alerts/#")
	pub2.publish("sensors/room1/temp", `2`)
	pub.expectMessage("sensors/room1/temp", `2`)
	pub2.publish("sensors/room2/temp", `3`)
	other.expectMessage("sensors/room2/temp", `3`)
	wild.expectMessage("sensors/room1/temp", `2`)
	wild.expectMessage("sensors/room2/temp", `3`)
}

// A session whose several filters match one topic gets the message once.
func TestSeedOverlappingSubscriptionsDeliverOnce(t *testing.T) {
	f := newFleet(t)
	sub := f.dialOK(t, f.ro.Token, "sensors/#", "sensors/+/temp", "sensors/room1/temp")
	pub := f.dialOK(t, f.rw.Token, "alerts/#")
	pub.publish("sensors/room1/temp", `1`)
	pub.publish("sensors/room1/temp", `2`)
	sub.expectMessage("sensors/room1/temp", `1`)
	sub.expectMessage("sensors/room1/temp", `2`)
}

// Any JSON value but null is a message (the seed's falsy quirk is not
// copied); malformed frames are ignored and the connection stays open.
func TestSeedMessageValues(t *testing.T) {
	f := newFleet(t)
	sub := f.dialOK(t, f.ro.Token, "sensors/#")
	pub := f.dialOK(t, f.rw.Token, "sensors/x")
	for _, bad := range []string{
		`not json`, `{"tag":"sensors/x"}`, `{"tag":"sensors/x","message":null}`,
		`{"message":1}`, `{"tag":"","message":1}`, `["sensors/x",1]`, `{"tag":"sensors/+","message":1}`,
		`{"tag":"sensors/#","message":1}`, `{"tag":"sensors/x","message":1`,
	} {
		pub.sendText(bad)
	}
	for _, good := range []string{`0`, `false`, `""`, `{}`, `[]`, `"héllo \"q\""`, `{"nested":{"a":[1,2,3]}}`} {
		pub.publish("sensors/x", good)
		sub.expectMessage("sensors/x", good)
	}
	pub.expectOpen()
}

// Seed defect 2: publishing is authorized by readwrite grants on the
// topic, not by the connection's own subscription list.
func TestSeedPublishAuthorizedByGrants(t *testing.T) {
	f := newFleet(t)
	sub := f.dialOK(t, f.ro.Token, "sensors/#")
	// Subscribed to alerts only, yet allowed to write sensors/... by grant.
	writer := f.dialOK(t, f.rw.Token, "alerts/#")
	reader := f.dialOK(t, f.ro.Token, "sensors/room9/temp")

	reader.publish("sensors/room9/temp", `"denied: read-only grant"`)
	writer.publish("sensors/room9/temp", `"allowed"`)
	sub.expectMessage("sensors/room9/temp", `"allowed"`)
	reader.expectMessage("sensors/room9/temp", `"allowed"`)
	writer.publish("elsewhere/x", `"denied: no grant"`)
	writer.publish("sensors/room9/temp", `"second"`)
	sub.expectMessage("sensors/room9/temp", `"second"`)
	reader.expectMessage("sensors/room9/temp", `"second"`)
	reader.expectOpen()
}

func TestSeedHandshakeRejections(t *testing.T) {
	f := newFleet(t)
	url := f.seedURL()
	cases := []struct {
		name    string
		url     string
		headers map[string]string
		code    ws.StatusCode
	}{
		{"no Authorization", url, map[string]string{"Tag": "sensors/#"}, 4001},
		{"no Tag", url, map[string]string{"Authorization": "Token " + f.ro.Token}, 4001},
		{"empty Tag", url, map[string]string{"Authorization": "Token " + f.ro.Token, "Tag": " , "}, 4001},
		{"unknown token", url, map[string]string{"Authorization": "Token gc_nope", "Tag": "sensors/#"}, 4003},
		{"tag not granted", url, map[string]string{"Authorization": "Token " + f.ro.Token, "Tag": "sensors/#,alerts/#"}, 4003},
		{"tag wider than grant", url, map[string]string{"Authorization": "Token " + f.ro.Token, "Tag": "#"}, 4003},
		{"invalid filter", url, map[string]string{"Authorization": "Token " + f.ro.Token, "Tag": "sensors/#/x"}, 4003},
		{"query token, no tags", url + "?token=" + f.ro.Token, nil, 4001},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dialHeaders(t, tc.url, tc.headers)
			reason := c.expectClose(tc.code)
			if reason == "" {
				t.Errorf("close %d without a reason", tc.code)
			}
		})
	}
}

// The seed accepts a bare secret; browsers send token and tags as query
// parameters.
func TestSeedAuthForms(t *testing.T) {
	f := newFleet(t)
	pub := f.dialOK(t, f.rw.Token, "sensors/a")
	bare := f.dialHeaders(t, f.seedURL(), map[string]string{"Authorization": f.ro.Token, "Tag": "sensors/#"})
	bare.expectOpen()
	bearer := f.dialHeaders(t, f.seedURL(), map[string]string{"Authorization": "Bearer " + f.ro.Token, "Tag": "sensors/#"})
	bearer.expectOpen()
	browser := f.dialQuery(t, f.ro.Token, "sensors/+", "sensors/a")
	browser.expectOpen()
	noSlash := f.dialHeaders(t, strings.TrimSuffix(f.seedURL(), "/"), map[string]string{"Authorization": "Token " + f.ro.Token, "Tag": "sensors/#"})
	noSlash.expectOpen()
	pub.publish("sensors/a", `1`)
	for _, c := range []*client{bare, bearer, browser, noSlash} {
		c.expectMessage("sensors/a", `1`)
	}
}

// An unknown path is an HTTP 404, not an upgrade.
func TestUnknownPathIs404(t *testing.T) {
	n := startNode(t)
	resp, err := http.Get("http://" + n.WSAddr() + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("got HTTP %d, want 404", resp.StatusCode)
	}
}

// 200 simultaneous connects against a limit of 5: exactly 5 admitted.
func TestConnectionLimitExactUnderConcurrency(t *testing.T) {
	f := newFleet(t)
	lim := f.createToken("limited", 5)
	f.grant(lim, f.sensors, "read")
	const attempts = 200
	var wg sync.WaitGroup
	results := make(chan ws.StatusCode, attempts)
	clients := make(chan *client, attempts)
	for range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := f.dial(t, lim.Token, "sensors/#")
			clients <- c
			// Admitted sessions answer a ping; refused ones get 4004.
			if err := c.ping(); err != nil {
				results <- 0
				return
			}
			ev := c.next(10 * time.Second)
			switch {
			case ev.closed:
				results <- ev.code
			case ev.pong:
				results <- 1 // admitted
			default:
				results <- 0
			}
		}()
	}
	wg.Wait()
	close(results)
	counts := map[ws.StatusCode]int{}
	for r := range results {
		counts[r]++
	}
	if counts[1] != 5 || counts[4004] != attempts-5 {
		t.Fatalf("admitted=%d limited=%d other=%v, want 5 and %d", counts[1], counts[4004], counts, attempts-5)
	}
	if got := len(f.Broker().Connections(lim.ID)); got != 5 {
		t.Fatalf("broker lists %d sessions, want 5", got)
	}
}

// Every kind of close frees the slot: client close, dropped TCP, kick,
// revocation.
func TestConnectionLimitSlotFreedOnEveryClose(t *testing.T) {
	f := newFleet(t)
	lim := f.createToken("one", 1)
	f.grant(lim, f.sensors, "readwrite")
	live := func() int { return len(f.Broker().Connections(lim.ID)) }

	// client close frame
	c := f.dialOK(t, lim.Token, "sensors/#")
	f.dial(t, lim.Token, "sensors/#").expectClose(4004)
	c.closeNormally()
	eventually(t, "slot freed after client close", func() bool { return live() == 0 })

	// TCP dropped without a close frame
	c = f.dialOK(t, lim.Token, "sensors/#")
	c.conn.Close()
	eventually(t, "slot freed after dropped TCP", func() bool { return live() == 0 })

	// kick
	c = f.dialOK(t, lim.Token, "sensors/#")
	var conns []struct {
		ID uint64 `json:"id"`
	}
	f.mustAPI("GET", fmt.Sprintf("/api/v1/connections?token_id=%d", lim.ID), nil, &struct {
		Connections any `json:"connections"`
	}{&conns})
	if len(conns) != 1 {
		t.Fatalf("connections: %+v", conns)
	}
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/connections/%d", conns[0].ID), nil, nil)
	c.expectClose(4005)
	f.dialOK(t, lim.Token, "sensors/#").closeNormally() // the slot is free at once
	eventually(t, "slot freed", func() bool { return live() == 0 })

	// revocation (permission removed)
	c = f.dialOK(t, lim.Token, "sensors/#")
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", lim.ID, f.sensors.ID), nil, nil)
	c.expectClose(4003)
	f.grant(lim, f.sensors, "read")
	f.dialOK(t, lim.Token, "sensors/#")
}
