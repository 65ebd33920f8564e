package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestSeedRunsEndToEnd: a device that writes many messages at once (the
// broker reads them in one wakeup and dispatches them in runs, viewing its
// read buffer) interleaved with messages the broker must copy — a frame
// split across two writes, a fragmented message, a message too large to
// hold — and topic changes: every subscriber, the only one of its topic or
// one of several, gets every message in the order sent, byte for byte.
func TestSeedRunsEndToEnd(t *testing.T) {
	f := newFleet(t)
	solo := f.dialOK(t, f.ro.Token, "sensors/solo")
	fans := []*client{f.dialOK(t, f.ro.Token, "sensors/#"), f.dialOK(t, f.ro.Token, "sensors/+"), f.dialOK(t, f.ro.Token, "sensors/#")}
	pub := f.dialOK(t, f.rw.Token, "alerts/#")

	type msg struct{ tag, value string }
	var sent []msg
	frame := func(fin bool, op ws.OpCode, p []byte) []byte {
		fr := ws.NewFrame(op, fin, p)
		fr = ws.MaskFrameInPlace(fr)
		b, err := ws.CompileFrame(fr)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	text := func(tag, value string) []byte {
		sent = append(sent, msg{tag, value})
		return frame(true, ws.OpText, fmt.Appendf(nil, `{"tag":%q,"message":%s}`, tag, value))
	}
	write := func(b []byte) {
		t.Helper()
		if _, err := pub.conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var burst []byte
	for i := range 50 {
		burst = append(burst, text("sensors/a", fmt.Sprintf(`{"n":%d}`, i))...)
	}
	for i := range 10 {
		burst = append(burst, text("sensors/solo", fmt.Sprintf(`{"solo":%d}`, i))...)
	}
	// fragmented: assembled in the broker's message buffer, so copied
	sent = append(sent, msg{"sensors/a", `{"frag":true}`})
	whole := []byte(`{"tag":"sensors/a","message":{"frag":true}}`)
	burst = append(burst, frame(false, ws.OpText, whole[:10])...)
	burst = append(burst, frame(true, ws.OpContinuation, whole[10:])...)
	// an escaped tag: unescaped into the decoder's buffer
	sent = append(sent, msg{"sensors/a", `{"escaped":1}`})
	burst = append(burst, frame(true, ws.OpText, []byte(`{"tag":"sensors\/a","message":{"escaped":1}}`))...)
	burst = append(burst, text("sensors/a", `{"big":"`+strings.Repeat("b", 5000)+`"}`)...)
	for i := range 40 {
		burst = append(burst, text("sensors/a", fmt.Sprintf(`{"m":%d}`, i))...)
	}
	write(burst)
	// one frame in two writes: the broker assembles it in its stash
	split := text("sensors/a", `{"split":"`+strings.Repeat("s", 300)+`"}`)
	write(split[:50])
	time.Sleep(20 * time.Millisecond)
	tail := append([]byte(nil), split[50:]...)
	for i := range 30 {
		tail = append(tail, text("sensors/b", fmt.Sprintf(`{"b":%d}`, i))...)
	}
	write(tail)

	check := func(name string, c *client, match func(string) bool) {
		t.Helper()
		for i, m := range sent {
			if !match(m.tag) {
				continue
			}
			ev := c.next(10 * time.Second)
			want := fmt.Sprintf(`{"tag":%q,"message":%s}`, m.tag, m.value)
			if ev.err != nil || ev.closed || !bytes.Equal([]byte(ev.text), []byte(want)) {
				t.Fatalf("%s: message %d: got %+.80v, want %.80s", name, i, ev, want)
			}
		}
	}
	check("sensors/solo", solo, func(tag string) bool { return tag == "sensors/solo" })
	for i, c := range fans {
		check(fmt.Sprintf("fan %d", i), c, func(string) bool { return true })
	}
}
