package acltest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// The retained-message contract (acl.RetainedStore).

// loadRetained returns LoadRetained's messages sorted by topic.
func loadRetained(t *testing.T, s acl.Store) []acl.Retained {
	t.Helper()
	rs, err := s.LoadRetained(bg)
	if err != nil {
		t.Fatalf("LoadRetained: %v", err)
	}
	if rs == nil {
		t.Fatal("LoadRetained returned a nil slice")
	}
	slices.SortFunc(rs, func(a, b acl.Retained) int { return strings.Compare(a.Topic, b.Topic) })
	return rs
}

func mustPutRetained(t *testing.T, s acl.Store, r acl.Retained) {
	t.Helper()
	if err := s.PutRetained(bg, r); err != nil {
		t.Fatalf("PutRetained(%q): %v", r.Topic, err)
	}
}

// sameRetained compares field by field: Payload and Props byte for byte
// (nil and empty Props alike), ExpiresAt as an instant and in UTC.
func sameRetained(t *testing.T, what string, got, want []acl.Retained) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d retained messages %v, want %d %v", what, len(got), topics(got), len(want), topics(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Topic != w.Topic || !bytes.Equal(g.Payload, w.Payload) || !bytes.Equal(g.Props, w.Props) ||
			g.QoS != w.QoS || !g.ExpiresAt.Equal(w.ExpiresAt) || g.ExpiresAt.IsZero() != w.ExpiresAt.IsZero() {
			t.Errorf("%s [%d]: got %+v, want %+v", what, i, g, w)
		}
		if !g.ExpiresAt.IsZero() && g.ExpiresAt.Location() != time.UTC {
			t.Errorf("%s [%d]: ExpiresAt %v is not in UTC", what, i, g.ExpiresAt)
		}
		if len(g.Props) == 0 && g.Props != nil {
			t.Errorf("%s [%d]: empty Props read back as %#v, want nil", what, i, g.Props)
		}
	}
}

func topics(rs []acl.Retained) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Topic
	}
	return out
}

// testRetainedPutReplaceDelete: put, load all, replace by topic, delete,
// delete an absent topic, put again after a delete.
func testRetainedPutReplaceDelete(t *testing.T, s acl.Store) {
	sameRetained(t, "empty store", loadRetained(t, s), nil)

	a := acl.Retained{Topic: "sensors/a/temp", Payload: []byte(`{"c":21.5}`), QoS: 1}
	b := acl.Retained{Topic: "sensors/b", Payload: []byte("b"), Props: []byte{0x03, 0x00, 0x04, 't', 'e', 'x', 't'}, QoS: 2}
	c := acl.Retained{Topic: "$SYS/büro//x", Payload: []byte("c"), QoS: 0}
	for _, r := range []acl.Retained{a, b, c} {
		mustPutRetained(t, s, r)
	}
	sameRetained(t, "after three puts", loadRetained(t, s), []acl.Retained{c, a, b})

	// Replace by topic: every field is the new message's.
	a2 := acl.Retained{Topic: a.Topic, Payload: []byte("replaced"), Props: []byte{0x01, 0x01}, QoS: 0}
	mustPutRetained(t, s, a2)
	b2 := acl.Retained{Topic: b.Topic, Payload: []byte("b2"), QoS: 1} // its properties are dropped
	mustPutRetained(t, s, b2)
	sameRetained(t, "after replacing two", loadRetained(t, s), []acl.Retained{c, a2, b2})

	if err := s.DeleteRetained(bg, a.Topic); err != nil {
		t.Fatalf("DeleteRetained: %v", err)
	}
	sameRetained(t, "after a delete", loadRetained(t, s), []acl.Retained{c, b2})
	for _, topic := range []string{a.Topic, "never/stored", "sensors"} {
		if err := s.DeleteRetained(bg, topic); err != nil {
			t.Errorf("DeleteRetained(%q) of an absent topic: %v, want nil", topic, err)
		}
	}
	sameRetained(t, "after deletes of absent topics", loadRetained(t, s), []acl.Retained{c, b2})

	mustPutRetained(t, s, a)
	sameRetained(t, "after putting a deleted topic again", loadRetained(t, s), []acl.Retained{c, a, b2})
	// Topics are exact keys: no level matching.
	if err := s.DeleteRetained(bg, "sensors/+"); err == nil {
		t.Errorf("DeleteRetained of a filter: no error")
	}
	sameRetained(t, "after deleting a filter", loadRetained(t, s), []acl.Retained{c, a, b2})
}

// testRetainedEmptyProps: no properties, nil or empty, read back as nil.
func testRetainedEmptyProps(t *testing.T, s acl.Store) {
	n := acl.Retained{Topic: "p/nil", Payload: []byte("x"), Props: nil}
	e := acl.Retained{Topic: "p/empty", Payload: []byte("y"), Props: []byte{}, QoS: 1}
	mustPutRetained(t, s, n)
	mustPutRetained(t, s, e)
	sameRetained(t, "empty props", loadRetained(t, s), []acl.Retained{e, n})
}

// testRetainedExpiry: ExpiresAt round-trips to the millisecond in UTC, a
// replace can clear it, and an expired message is never loaded.
func testRetainedExpiry(t *testing.T, s acl.Store) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	at := time.Now().Add(time.Hour).Truncate(time.Second).Add(123456789 * time.Nanosecond).In(zone)
	exp := acl.Retained{Topic: "exp/later", Payload: []byte("later"), QoS: 1, ExpiresAt: at}
	forever := acl.Retained{Topic: "exp/never", Payload: []byte("never")}
	gone := acl.Retained{Topic: "exp/gone", Payload: []byte("gone"), ExpiresAt: time.Now().Add(-time.Minute)}
	for _, r := range []acl.Retained{exp, forever, gone} {
		mustPutRetained(t, s, r)
	}
	want := exp
	want.ExpiresAt = at.Truncate(time.Millisecond) // …123 ms
	sameRetained(t, "expiry round trip", loadRetained(t, s), []acl.Retained{want, forever})
	if got := loadRetained(t, s); len(got) != 2 {
		t.Fatalf("a second load: %v", topics(got))
	}

	// Replacing an expiring message by one without expiry clears it, and
	// the other way round.
	cleared := acl.Retained{Topic: exp.Topic, Payload: []byte("no expiry now")}
	mustPutRetained(t, s, cleared)
	soon := acl.Retained{Topic: forever.Topic, Payload: []byte("soon"), ExpiresAt: time.Now().Add(300 * time.Millisecond).UTC().Truncate(time.Millisecond)}
	mustPutRetained(t, s, soon)
	sameRetained(t, "after replacing", loadRetained(t, s), []acl.Retained{cleared, soon})
	time.Sleep(time.Until(soon.ExpiresAt) + 50*time.Millisecond)
	sameRetained(t, "once expired", loadRetained(t, s), []acl.Retained{cleared})
	// An expired topic may be stored again (the load deleted or skipped it).
	mustPutRetained(t, s, forever)
	sameRetained(t, "put again after expiry", loadRetained(t, s), []acl.Retained{cleared, forever})
}

// testRetainedBinary: payloads and properties are bytes, not text: zero
// bytes, invalid UTF-8, every byte value, a large payload.
func testRetainedBinary(t *testing.T, s acl.Store) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	large := bytes.Repeat([]byte{0, 1, 0, 0xff}, 64<<10) // 256 KiB
	rs := []acl.Retained{
		{Topic: "bin/every", Payload: every, Props: []byte{0, 0, 0}, QoS: 1},
		{Topic: "bin/large", Payload: large, QoS: 2},
		{Topic: "bin/nul", Payload: []byte{0}},
		{Topic: "bin/utf8", Payload: []byte{0xc3, 0x28, 0x00, 0xa0, 0xa1}, Props: []byte{0xff, 0xfe}},
	}
	for _, r := range rs {
		mustPutRetained(t, s, r)
	}
	sameRetained(t, "binary payloads", loadRetained(t, s), rs)
}

// testRetainedInvalid: a value ValidateRetained refuses is ErrInvalid and
// writes nothing.
func testRetainedInvalid(t *testing.T, s acl.Store) {
	ok := acl.Retained{Topic: "ok", Payload: []byte("1")}
	mustPutRetained(t, s, ok)
	for name, r := range map[string]acl.Retained{
		"empty topic":    {Topic: "", Payload: []byte("x")},
		"wildcard topic": {Topic: "a/+", Payload: []byte("x")},
		"hash topic":     {Topic: "a/#", Payload: []byte("x")},
		"NUL in topic":   {Topic: "a\x00b", Payload: []byte("x")},
		"invalid UTF-8":  {Topic: "a\xffb", Payload: []byte("x")},
		"too long":       {Topic: strings.Repeat("a", 4096), Payload: []byte("x")},
		"nil payload":    {Topic: "ok"},
		"empty payload":  {Topic: "ok", Payload: []byte{}},
		"QoS 3":          {Topic: "ok", Payload: []byte("x"), QoS: 3},
	} {
		wantErr(t, "PutRetained with "+name, s.PutRetained(bg, r), acl.ErrInvalid)
	}
	for _, topic := range []string{"", "a/#", "a\x00b"} {
		wantErr(t, fmt.Sprintf("DeleteRetained(%q)", topic), s.DeleteRetained(bg, topic), acl.ErrInvalid)
	}
	sameRetained(t, "after refused writes", loadRetained(t, s), []acl.Retained{ok})
}

// testRetainedCancelled: a done ctx fails every call with ctx.Err() and
// changes nothing.
func testRetainedCancelled(t *testing.T, s acl.Store) {
	keep := acl.Retained{Topic: "keep", Payload: []byte("1")}
	mustPutRetained(t, s, keep)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	wantErr(t, "PutRetained with a cancelled context", s.PutRetained(ctx, acl.Retained{Topic: "new", Payload: []byte("2")}), context.Canceled)
	wantErr(t, "PutRetained (replace) with a cancelled context", s.PutRetained(ctx, acl.Retained{Topic: "keep", Payload: []byte("2")}), context.Canceled)
	wantErr(t, "DeleteRetained with a cancelled context", s.DeleteRetained(ctx, "keep"), context.Canceled)
	_, err := s.LoadRetained(ctx)
	wantErr(t, "LoadRetained with a cancelled context", err, context.Canceled)
	sameRetained(t, "after cancelled calls", loadRetained(t, s), []acl.Retained{keep})
}

// testRetainedConcurrent: writers on distinct topics and on one shared
// topic at once, as the nodes of a cluster may; every distinct write is
// kept and the shared topic holds one of the writes whole.
func testRetainedConcurrent(t *testing.T, s acl.Store) {
	const workers, rounds = 6, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				own := acl.Retained{Topic: fmt.Sprintf("c/%d/%d", w, i), Payload: []byte(fmt.Sprintf("%d-%d", w, i))}
				if err := s.PutRetained(bg, own); err != nil {
					errs <- err
				}
				shared := acl.Retained{Topic: "c/shared", Payload: []byte(fmt.Sprintf("w%d", w)), Props: []byte{byte(w)}, QoS: byte(w % 3)}
				if err := s.PutRetained(bg, shared); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := loadRetained(t, s)
	if len(got) != workers*rounds+1 {
		t.Fatalf("%d retained messages, want %d", len(got), workers*rounds+1)
	}
	for _, r := range got {
		if r.Topic == "c/shared" {
			var w int
			if _, err := fmt.Sscanf(string(r.Payload), "w%d", &w); err != nil || !bytes.Equal(r.Props, []byte{byte(w)}) || r.QoS != byte(w%3) {
				t.Errorf("shared topic holds a mixed write: %+v", r)
			}
			continue
		}
		var w, i int
		if _, err := fmt.Sscanf(r.Topic, "c/%d/%d", &w, &i); err != nil || string(r.Payload) != fmt.Sprintf("%d-%d", w, i) {
			t.Errorf("unexpected message %+v", r)
		}
	}
}
