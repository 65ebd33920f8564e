package netpoll

import (
	"testing"

	cwnetpoll "github.com/cloudwego/netpoll"
)

// racyReader is netpoll's LinkBuffer with a poller simulated in Len: right
// after the first time Len reports it empty, more bytes "arrive".
type racyReader struct {
	*cwnetpoll.LinkBuffer
	late []byte
}

func (r *racyReader) Len() int {
	n := r.LinkBuffer.Len()
	if n == 0 && r.late != nil {
		buf, _ := r.LinkBuffer.Malloc(len(r.late))
		copy(buf, r.late)
		_ = r.LinkBuffer.Flush()
		r.late = nil
	}
	return n
}

type fakeConn struct {
	cwnetpoll.Connection // nil: only Reader is used
	rd                   *racyReader
}

func (f *fakeConn) Reader() cwnetpoll.Reader { return f.rd }

// TestOnRequestKeepsLateBytes: bytes the poller appends while OnRequest
// runs, after the frame reader saw the buffer empty, stay for the next
// pass instead of being discarded.
func TestOnRequestKeepsLateBytes(t *testing.T) {
	h := newTestHandler()
	var got []string
	h.onMessage = func(_ *testSession, _ bool, p []byte) { got = append(got, string(p)) }
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}, h)
	if err != nil {
		t.Fatal(err)
	}
	rd := &racyReader{LinkBuffer: cwnetpoll.NewLinkBuffer(), late: clientFrame(true, 0, opText, []byte("late"))}
	nc := &fakeConn{rd: rd}
	c := &Conn{srv: s, nc: nc, mode: modeFrames}
	c.sess = &testSession{h: h, c: c, closed: make(chan struct{})}
	c.flags.Store(fUpgraded)
	first := clientFrame(true, 0, opText, []byte("first"))
	buf, _ := rd.LinkBuffer.Malloc(len(first))
	copy(buf, first)
	_ = rd.LinkBuffer.Flush()

	_ = s.onRequest((*connCtx)(c), nc)
	if rd.late != nil {
		t.Fatal("the simulated poller never ran: the test no longer covers the race")
	}
	if left := rd.LinkBuffer.Len(); left != len(clientFrame(true, 0, opText, []byte("late"))) {
		t.Fatalf("%d bytes left after OnRequest; the late frame was dropped", left)
	}
	_ = s.onRequest((*connCtx)(c), nc) // netpoll calls again while input remains
	if len(got) != 2 || got[0] != "first" || got[1] != "late" {
		t.Fatalf("delivered %q", got)
	}
}
