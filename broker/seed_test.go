package broker

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
)

// coalescingConn is a seed transport with netpoll's coalescing send: it
// records which way each frame came (SendFrames copies, SendBacklog
// shares a Frame).
type coalescingConn struct {
	recConn
	mu2     sync.Mutex
	copied  [][]byte // SendFrames
	shared  [][]byte // SendBacklog
	count   bool     // count only (allocation-free)
	n       int      // frames or pieces queued
	runs    int      // calls of the run methods
	all     [][]byte // every frame, in the order queued (unless count)
	held    bool     // PayloadHeld's answer
	scratch []byte
}

func (c *coalescingConn) record(b []byte, copied bool) {
	c.n++
	if c.count {
		return
	}
	b = append([]byte(nil), b...)
	if copied {
		c.copied = append(c.copied, b)
	} else {
		c.shared = append(c.shared, b)
	}
	c.all = append(c.all, b)
}

// frameLen is the length of the unmasked server frame at the start of b.
func frameLen(b []byte) int {
	switch n := int(b[1] & 0x7f); n {
	case 126:
		return 4 + int(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		return 10 + int(binary.BigEndian.Uint64(b[2:10]))
	default:
		return 2 + n
	}
}

func (c *coalescingConn) frames() [][]byte {
	c.mu2.Lock()
	defer c.mu2.Unlock()
	return slices.Clone(c.all)
}

func (c *coalescingConn) SendFrames(b []byte) (bool, <-chan struct{}) {
	c.mu2.Lock()
	defer c.mu2.Unlock()
	c.record(b, true)
	return true, nil
}

func (c *coalescingConn) SendBacklog(f *proto.Frame) (bool, <-chan struct{}) {
	c.mu2.Lock()
	defer c.mu2.Unlock()
	k := 0
	for b := f.B; len(b) > 0; k++ {
		n := frameLen(b)
		c.record(b[:n], false)
		b = b[n:]
	}
	if k > 1 {
		c.runs++ // a run's frames in one shared Frame (deliverRun)
	}
	f.Release()
	return true, nil
}

func (c *coalescingConn) SendTextRun(payloads [][]byte) (int, <-chan struct{}) {
	c.mu2.Lock()
	defer c.mu2.Unlock()
	c.runs++
	for _, p := range payloads {
		c.scratch = proto.AppendFrameHeader(c.scratch[:0], ws.OpText, len(p))
		c.scratch = append(c.scratch, p...)
		c.record(c.scratch, true)
	}
	return len(payloads), nil
}

// PayloadHeld: as a publisher's transport, the payloads it hands OnMessage
// stay valid until OnReadEnd when held is set (netpoll's, for a whole frame
// in its read buffer).
func (c *coalescingConn) PayloadHeld() bool { return c.held }

// TestSeedDeliverCoalesces: a message with one seed recipient (a fan-in)
// goes to it by copy, with no shared Frame; with several, the first takes
// it by copy and the others share one Frame; the bytes are the same seed
// frame either way.
func TestSeedDeliverCoalesces(t *testing.T) {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub, _ := e.connect(t, rw, "fleet/cmd")
	connect := func(tag string) *coalescingConn {
		c := &coalescingConn{}
		if _, err := e.b.Connect(c, ConnectRequest{Secret: []byte(rw), Tags: []string{tag}}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	solo := connect("fleet/solo/x")
	a, b, c := connect("fleet/all"), connect("fleet/all"), connect("fleet/+")

	pub.OnMessage(true, []byte(`{"tag":"fleet/solo/x","message":{"seq":1}}`))
	want := proto.AppendSeedFrame(nil, "fleet/solo/x", []byte(`{"seq":1}`))
	if len(solo.copied) != 1 || len(solo.shared) != 0 || !bytes.Equal(solo.copied[0], want) {
		t.Fatalf("one recipient: copied %q, shared %d; want the frame %q by copy", solo.copied, len(solo.shared), want)
	}
	if got := c.n; got != 0 {
		t.Fatalf("fleet/+ subscriber got %d frames for fleet/solo/x", got)
	}

	pub.OnMessage(true, []byte(`{"tag":"fleet/all","message":[2]}`))
	want = proto.AppendSeedFrame(nil, "fleet/all", []byte(`[2]`))
	copies, shares := 0, 0
	for _, s := range []*coalescingConn{a, b, c} {
		s.mu2.Lock()
		for _, f := range s.copied {
			if bytes.Equal(f, want) {
				copies++
			}
		}
		for _, f := range s.shared {
			if !bytes.Equal(f, want) {
				t.Fatalf("shared frame %q, want %q", f, want)
			}
			shares++
		}
		s.mu2.Unlock()
	}
	if copies != 1 || shares != 2 {
		t.Fatalf("three recipients: %d by copy, %d shared; want 1 and 2", copies, shares)
	}
}

// TestSeedFanInAllocs: the fan-in path (one subscriber, taken by copy into
// the transport) allocates nothing in steady state.
func TestSeedFanInAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub, _ := e.connect(t, rw, "fleet/cmd")
	sub := &coalescingConn{count: true}
	if _, err := e.b.Connect(sub, ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/+/temp"}}); err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"tag":"fleet/dev1/temp","message":{"c":21.5,"unit":"C","seq":12345678}}`)
	pub.OnMessage(true, msg)
	if allocs := testing.AllocsPerRun(200, func() { pub.OnMessage(true, msg) }); allocs != 0 {
		t.Fatalf("a fan-in publish allocates %.1f times per message", allocs)
	}
	if sub.n != 202 {
		t.Fatalf("delivered %d, want 202", sub.n)
	}
}

// TestSeedCountsOncePerRead: a seed connection's publishes reach the
// message and byte counters when its read ends (OnReadEnd), or when it
// closes, all of them: none lost, none counted twice.
func TestSeedCountsOncePerRead(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnvRegistered(t, reg)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	value := func(name, label string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
					total += m.GetCounter().GetValue()
				}
			}
		}
		return total
	}
	pub, _ := e.connect(t, rw, "fleet/cmd")
	e.connect(t, rw, "fleet/+")
	e.connect(t, rw, "fleet/#")
	msg := []byte(`{"tag":"fleet/t","message":1}`)
	for range 5 {
		pub.OnMessage(true, msg)
	}
	if got := value("gatecast_messages_in_total", "seed"); got != 0 {
		t.Fatalf("before the read ended: %v messages counted", got)
	}
	pub.OnReadEnd()
	if in, out := value("gatecast_messages_in_total", "seed"), value("gatecast_messages_out_total", "seed"); in != 5 || out != 10 {
		t.Fatalf("after the read: %v in, %v out; want 5, 10", in, out)
	}
	if b := value("gatecast_message_bytes_in_total", ""); b != float64(5*len(msg)) {
		t.Fatalf("bytes in %v, want %d", b, 5*len(msg))
	}
	wantOut := float64(10 * len(proto.AppendSeedFrame(nil, "fleet/t", []byte("1"))))
	if b := value("gatecast_message_bytes_out_total", ""); b != wantOut {
		t.Fatalf("bytes out %v, want %v", b, wantOut)
	}
	pub.OnReadEnd() // nothing new: nothing added
	pub.OnMessage(true, msg)
	pub.OnClose()
	if in, out := value("gatecast_messages_in_total", "seed"), value("gatecast_messages_out_total", "seed"); in != 6 || out != 12 {
		t.Fatalf("after the close: %v in, %v out; want 6, 12", in, out)
	}
}

// TestSeedDeliversAsItCame: a client message in the encoder's own form
// reaches seed subscribers byte for byte as it came; any other form
// (spacing, an escaped tag, another key order) is encoded again into that
// form. Within one read (one pooled Message) a message of one kind never
// leaks into the next, whether it goes by copy (one recipient) or as a
// shared Frame (several).
func TestSeedDeliversAsItCame(t *testing.T) {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub, _ := e.connect(t, rw, "fleet/cmd")
	for _, n := range []int{1, 3} {
		subs := make([]*coalescingConn, n)
		for i := range subs {
			subs[i] = &coalescingConn{}
			if _, err := e.b.Connect(subs[i], ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/" + string(rune('a'+n)) + "/#"}}); err != nil {
				t.Fatal(err)
			}
		}
		topic := "fleet/" + string(rune('a'+n)) + "/t"
		ins := []string{
			`{"tag":"` + topic + `","message":{"c":21.5}}`,
			`{"tag": "` + topic + `", "message": {"c": 21.5}}`,
			`{"tag":"` + topic + `","message":[1]}`,
			`{"message":"x","tag":"` + topic + `"}`,
			`{"tag":"` + strings.Replace(topic, "/", `\/`, 1) + `","message":2}`,
			`{"tag":"` + topic + `","message":3}`,
		}
		wants := [][]byte{
			proto.AppendSeedFrame(nil, topic, []byte(`{"c":21.5}`)),
			proto.AppendSeedFrame(nil, topic, []byte(`{"c": 21.5}`)),
			proto.AppendSeedFrame(nil, topic, []byte(`[1]`)),
			proto.AppendSeedFrame(nil, topic, []byte(`"x"`)),
			proto.AppendSeedFrame(nil, topic, []byte(`2`)),
			proto.AppendSeedFrame(nil, topic, []byte(`3`)),
		}
		for _, in := range ins {
			pub.OnMessage(true, []byte(in)) // one read: the Message is reused
		}
		pub.OnReadEnd()
		for i, s := range subs {
			s.mu2.Lock()
			got := append(append([][]byte(nil), s.copied...), s.shared...)
			s.mu2.Unlock()
			if len(got) != len(wants) {
				t.Fatalf("%d recipients: subscriber %d got %d frames, want %d", n, i, len(got), len(wants))
			}
			for j := range wants {
				if !bytes.Equal(got[j], wants[j]) {
					t.Fatalf("%d recipients: subscriber %d frame %d = %q, want %q (from %q)", n, i, j, got[j], wants[j], ins[j])
				}
			}
		}
	}
}
