package compare

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// fakeServer accepts one WebSocket connection on loopback and runs serve
// on it; the returned channel carries serve's error.
func fakeServer(t *testing.T, serve func(c net.Conn) error) (url string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := ws.Upgrade(c); err != nil {
			ch <- err
			return
		}
		ch <- serve(c)
	}()
	return "ws://" + ln.Addr().String() + "/", ch
}

func writeFrame(c net.Conn, fin bool, op ws.OpCode, p string) error {
	return ws.WriteFrame(c, ws.Frame{Header: ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}, Payload: []byte(p)})
}

func TestConnReassemblesFragmentsAnswersPingsAndReportsClose(t *testing.T) {
	url, done := fakeServer(t, func(c net.Conn) error {
		if err := writeFrame(c, false, ws.OpText, `{"tag":"a/b","mess`); err != nil {
			return err
		}
		if err := writeFrame(c, true, ws.OpPing, "are you there"); err != nil {
			return err
		}
		if err := writeFrame(c, true, ws.OpContinuation, `age":{"t":7,"p":""}}`); err != nil {
			return err
		}
		h, err := ws.ReadHeader(c)
		if err != nil {
			return err
		}
		p := make([]byte, h.Length)
		if _, err := c.Read(p); err != nil {
			return err
		}
		ws.Cipher(p, h.Mask, 0)
		if h.OpCode != ws.OpPong || !h.Masked || string(p) != "are you there" {
			return errors.New("expected a masked pong echoing the ping, got " + string(p))
		}
		return ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(4003, "tag not permitted")))
	})
	c, err := Seed{URL: url, Token: "secret"}.Dial(context.Background(), "c1", []string{"a/b"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topic, payload, err := c.Next()
	if err != nil || string(topic) != "a/b" || string(payload) != `{"t":7,"p":""}` {
		t.Fatalf("Next = %q, %q, %v", topic, payload, err)
	}
	_, _, err = c.Next()
	if code, ok := closeCode(err); !ok || code != 4003 {
		t.Fatalf("after the close frame: %v, want close code 4003", err)
	}
	if err := <-done; err != nil {
		t.Fatal("server:", err)
	}
}

func TestConnDecodesAStreamAcrossFrames(t *testing.T) {
	pong := make(chan string, 1)
	url, done := fakeServer(t, func(c net.Conn) error {
		// NATS greets first; then two operations in one frame, the second
		// one's payload and a PING in the next frame.
		if err := writeFrame(c, true, ws.OpBinary, "INFO {}\r\n"); err != nil {
			return err
		}
		data, op, err := wsutil.ReadClientData(c) // CONNECT, SUB, PING
		if err != nil {
			return err
		}
		if op != ws.OpBinary || !strings.HasPrefix(string(data), "CONNECT ") || !strings.Contains(string(data), "SUB a.* 1\r\nPING\r\n") {
			return errors.New("unexpected handshake: " + string(data))
		}
		if err := writeFrame(c, true, ws.OpBinary, "PONG\r\nMSG a.b 1 2\r\nhi\r\nMSG a.c 1 3\r\n"); err != nil {
			return err
		}
		if err := writeFrame(c, true, ws.OpBinary, "abc\r\nPING\r\n"); err != nil {
			return err
		}
		data, _, err = wsutil.ReadClientData(c)
		pong <- string(data)
		return err
	})
	c, err := NATS{URL: url}.Dial(context.Background(), "c1", []string{"a/+"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range [][2]string{{"a.b", "hi"}, {"a.c", "abc"}} {
		topic, payload, err := c.Next()
		if err != nil || string(topic) != want[0] || string(payload) != want[1] {
			t.Fatalf("Next = %q, %q, %v; want %q, %q", topic, payload, err, want[0], want[1])
		}
	}
	go c.Next() // answers the PING, then fails when the server hangs up
	if got := <-pong; got != "PONG\r\n" {
		t.Fatalf("reply to PING = %q", got)
	}
	if err := <-done; err != nil {
		t.Fatal("server:", err)
	}
}

func TestConnBatchesMaskedPublishFrames(t *testing.T) {
	got := make(chan []string, 1)
	url, done := fakeServer(t, func(c net.Conn) error {
		var frames []string
		for range 2 {
			data, op, err := wsutil.ReadClientData(c) // fails on an unmasked frame
			if err != nil {
				return err
			}
			if op != ws.OpText {
				return errors.New("seed publishes must be text frames")
			}
			frames = append(frames, string(data))
		}
		got <- frames
		return nil
	})
	c, err := Seed{URL: url, Token: "secret"}.Dial(context.Background(), "c1", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.AppendPublish("a/1", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	if err := c.AppendPublish("a/2", []byte(`{"k":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.AppendPublish("a/+", nil); err == nil {
		t.Fatal("an empty seed message was queued")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	frames := <-got
	if frames[0] != `{"tag":"a/1","message":1}` || frames[1] != `{"tag":"a/2","message":{"k":2}}` {
		t.Fatalf("frames = %q", frames)
	}
	if err := <-done; err != nil {
		t.Fatal("server:", err)
	}
}

func TestConnRefusesOversizedFrames(t *testing.T) {
	url, _ := fakeServer(t, func(c net.Conn) error {
		// Only the header: a reader that trusted the length would try to
		// allocate 1 GiB.
		return ws.WriteHeader(c, ws.Header{Fin: true, OpCode: ws.OpText, Length: 1 << 30})
	})
	c, err := Seed{URL: url, Token: "secret"}.Dial(context.Background(), "c1", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Next(); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Next = %v, want a size error", err)
	}
}

func TestHandshakeFailsWithTheContext(t *testing.T) {
	url, _ := fakeServer(t, func(c net.Conn) error {
		// Never answers CONNECT; returns when the client hangs up.
		_, err := c.Read(make([]byte, 1<<10))
		for err == nil {
			_, err = c.Read(make([]byte, 1<<10))
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := (MQTT{URL: url}).Dial(ctx, "c1", []string{"a"}); err == nil {
		t.Fatal("Dial succeeded without a CONNACK")
	}
	// Without the context the handshake would wait handshakeTimeout (15 s).
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Dial took %v; the context allowed 200 ms", time.Since(start))
	}
}
