package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// When the admin call returns, the close frame is already queued: the
// client reads it without any further admin action.
func TestRevokeTokenDeletedDisabledRotated(t *testing.T) {
	f := newFleet(t)
	path := func(tok tokenOut) string { return fmt.Sprintf("/api/v1/tokens/%d", tok.ID) }

	t.Run("deleted", func(t *testing.T) {
		tok := f.createToken("doomed", 0)
		f.grant(tok, f.sensors, "read")
		a := f.dialOK(t, tok.Token, "sensors/#")
		b := f.dialOK(t, tok.Token, "sensors/+/temp")
		bystander := f.dialOK(t, f.ro.Token, "sensors/#")
		f.mustAPI("DELETE", path(tok), nil, nil)
		a.expectClose(4002)
		b.expectClose(4002)
		bystander.expectOpen()
		f.dial(t, tok.Token, "sensors/#").expectClose(4003)
	})
	t.Run("disabled", func(t *testing.T) {
		tok := f.createToken("paused", 0)
		f.grant(tok, f.sensors, "read")
		a := f.dialOK(t, tok.Token, "sensors/#")
		f.mustAPI("PATCH", path(tok), map[string]any{"disabled": true}, nil)
		a.expectClose(4002)
		f.dial(t, tok.Token, "sensors/#").expectClose(4003)
		f.mustAPI("PATCH", path(tok), map[string]any{"disabled": false}, nil)
		f.dialOK(t, tok.Token, "sensors/#")
	})
	t.Run("rotated", func(t *testing.T) {
		tok := f.createToken("rotating", 0)
		f.grant(tok, f.sensors, "read")
		a := f.dialOK(t, tok.Token, "sensors/#")
		var rotated struct {
			Token string `json:"token"`
		}
		f.mustAPI("POST", path(tok)+"/rotate", nil, &rotated)
		if rotated.Token == "" || rotated.Token == tok.Token {
			t.Fatalf("rotate returned %q", rotated.Token)
		}
		a.expectClose(4002)
		f.dial(t, tok.Token, "sensors/#").expectClose(4003)
		f.dialOK(t, rotated.Token, "sensors/#")
	})
}

// Renaming a token or raising its limit disconnects nobody; lowering the
// limit below the live count closes the newest sessions with 4004.
func TestTokenEditsThatKeepSessions(t *testing.T) {
	f := newFleet(t)
	tok := f.createToken("fleet-a", 3)
	f.grant(tok, f.sensors, "readwrite")
	var cs []*client
	for range 3 {
		cs = append(cs, f.dialOK(t, tok.Token, "sensors/#"))
	}
	path := fmt.Sprintf("/api/v1/tokens/%d", tok.ID)
	f.mustAPI("PATCH", path, map[string]any{"name": "fleet-a-renamed"}, nil)
	f.mustAPI("PATCH", path, map[string]any{"max_connections": 10}, nil)
	for _, c := range cs {
		c.expectOpen()
	}
	f.mustAPI("PATCH", path, map[string]any{"max_connections": 1}, nil)
	cs[2].expectClose(4004)
	cs[1].expectClose(4004)
	cs[0].expectOpen()
	f.dial(t, tok.Token, "sensors/#").expectClose(4004)
}

// Seed defect 3: a downgrade applies to live sessions at once. A session
// whose subscriptions stay covered stays connected, and its very next
// publish is refused.
func TestRevokeDowngradeRefusesNextPublish(t *testing.T) {
	f := newFleet(t)
	tok := f.createToken("downgraded", 0)
	f.grant(tok, f.sensors, "readwrite")
	dev := f.dialOK(t, tok.Token, "sensors/dev1/#")
	sub := f.dialOK(t, f.ro.Token, "sensors/#")

	dev.publish("sensors/dev1/telemetry", `"before"`)
	sub.expectMessage("sensors/dev1/telemetry", `"before"`)

	f.grant(tok, f.sensors, "read") // returns after enforcement
	dev.publish("sensors/dev1/telemetry", `"after downgrade"`)
	// A marker from an authorized writer must be the next thing sub sees.
	w := f.dialOK(t, f.rw.Token, "alerts/#")
	w.publish("sensors/dev1/telemetry", `"marker"`)
	sub.expectMessage("sensors/dev1/telemetry", `"marker"`)
	dev.expectMessage("sensors/dev1/telemetry", `"marker"`) // still connected, still reading
	// and back to readwrite works again
	f.grant(tok, f.sensors, "readwrite")
	dev.publish("sensors/dev1/telemetry", `"upgraded"`)
	sub.expectMessage("sensors/dev1/telemetry", `"upgraded"`)
}

// Removing a permission closes only the sessions whose subscriptions it
// no longer covers; overlapping grants keep the others.
func TestRevokePermissionRemoved(t *testing.T) {
	f := newFleet(t)
	tok := f.createToken("mixed", 0)
	wide := f.createTag("plant/#")
	narrow := f.createTag("plant/line1/+")
	f.grant(tok, wide, "read")
	f.grant(tok, narrow, "read")
	onlyWide := f.dialOK(t, tok.Token, "plant/line2/x")
	both := f.dialOK(t, tok.Token, "plant/line1/x")
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, narrow.ID), nil, nil)
	onlyWide.expectOpen()
	both.expectOpen() // still covered by plant/#
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, wide.ID), nil, nil)
	onlyWide.expectClose(4003)
	both.expectClose(4003)
}

// Editing or deleting a tag pattern re-checks every session of every token
// holding a permission on it.
func TestRevokeTagEditedOrDeleted(t *testing.T) {
	f := newFleet(t)
	tok := f.createToken("tagged", 0)
	tag := f.createTag("farm/+/moisture")
	f.grant(tok, tag, "read")
	moisture := f.dialOK(t, tok.Token, "farm/+/moisture")
	field := f.dialOK(t, tok.Token, "farm/field7/moisture")
	bystander := f.dialOK(t, f.ro.Token, "sensors/#")

	f.mustAPI("PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID), map[string]any{"pattern": "farm/field7/#"}, nil)
	moisture.expectClose(4003) // farm/+/moisture is not within farm/field7/#
	field.expectOpen()         // farm/field7/moisture still is
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), nil, nil)
	field.expectClose(4003)
	bystander.expectOpen()
}

// An admin kick closes with 4005; the connection list shows sessions.
func TestKickAndList(t *testing.T) {
	f := newFleet(t)
	c := f.dialOK(t, f.ro.Token, "sensors/+/temp", "sensors/a")
	var conns []struct {
		ID            uint64   `json:"id"`
		TokenID       int64    `json:"token_id"`
		RemoteAddr    string   `json:"remote_addr"`
		Protocol      string   `json:"protocol"`
		Subscriptions []string `json:"subscriptions"`
		Since         string   `json:"connected_since"`
	}
	f.mustAPI("GET", "/api/v1/connections", nil, &struct {
		Connections any `json:"connections"`
	}{&conns})
	if len(conns) != 1 || conns[0].TokenID != f.ro.ID || conns[0].Protocol != "seed" ||
		len(conns[0].Subscriptions) != 2 || conns[0].RemoteAddr == "" || conns[0].Since == "" {
		t.Fatalf("connections: %+v", conns)
	}
	if code := f.api("DELETE", "/api/v1/connections/999999", nil, nil); code != 404 {
		t.Fatalf("kick unknown: HTTP %d", code)
	}
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/connections/%d", conns[0].ID), nil, nil)
	c.expectClose(4005)
}

// Shutdown closes every client with 1001 and frees everything.
func TestShutdownClosesClientsWith1001(t *testing.T) {
	f := newFleet(t)
	a := f.dialOK(t, f.ro.Token, "sensors/#")
	b := f.dialOK(t, f.rw.Token, "alerts/#")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.Shutdown(ctx)
	}()
	a.expectClose(ws.StatusGoingAway)
	b.expectClose(ws.StatusGoingAway)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := f.Broker().SessionCount(); n != 0 {
		t.Fatalf("%d sessions left after shutdown", n)
	}
}
