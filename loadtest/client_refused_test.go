package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/admin"
)

// runClient runs `gatecast pub|sub ARGS` and returns its exit code and output.
func runClient(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := RunClientCLI(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// A refused connection is upgraded and then closed with a close frame that
// often arrives in the same read as the 101 response. pub and sub must
// report its code and reason and exit 1, however the bytes are split, and
// never claim success.
func TestClientCLIRefused(t *testing.T) {
	n := testNode(t)
	url := "ws://" + n.WSAddr() + "/ws/brocker/"
	api := &admin.Client{BaseURL: "http://" + n.AdminAddr(), Key: n.AdminKey()}
	ctx := t.Context()
	tok, err := api.CreateToken(ctx, admin.CreateTokenRequest{Name: "demo", MaxConnections: 1})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := api.CreateTag(ctx, "sensors/#")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.SetPermission(ctx, tok.ID, tag.ID, "readwrite"); err != nil {
		t.Fatal(err)
	}

	// The race between the close frame and the 101 decides which read
	// brings it: many runs cover both.
	for i := 0; i < 40; i++ {
		code, out, errOut := runClient(t, ctx, "pub", "--url", url, "--token", "not-the-secret", "sensors/room1/temp", `{"c":21.5}`)
		if code != 1 || out != "" || errOut != "gatecast pub: closed by the broker: 4003 invalid token\n" {
			t.Fatalf("pub with a wrong token, run %d: exit %d\nstdout: %q\nstderr: %q", i, code, out, errOut)
		}
		code, out, errOut = runClient(t, ctx, "sub", "--url", url, "--token", "not-the-secret", "--tags", "sensors/#")
		if code != 1 || out != "" || errOut != "gatecast sub: closed by the broker: 4003 invalid token\n" {
			t.Fatalf("sub with a wrong token, run %d: exit %d\nstdout: %q\nstderr: %q", i, code, out, errOut)
		}
	}
	code, _, errOut := runClient(t, ctx, "pub", "--url", url, "--token", tok.Secret, "--tags", "plant/#", "plant/1", "1")
	if code != 1 || !strings.Contains(errOut, `closed by the broker: 4003 tag not permitted: "plant/#"`) {
		t.Fatalf("pub on a tag not granted: exit %d %q", code, errOut)
	}

	// The right token: sub receives what pub sends, both exit 0; a second
	// connection over max_connections 1 is refused with 4004.
	subCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var subCode int
	var subOut, subErr string
	wg.Add(1)
	go func() {
		defer wg.Done()
		subCode, subOut, subErr = runClient(t, subCtx, "sub", "--url", url, "--token", tok.Secret, "--tags", "sensors/+/temp", "--count", "1")
	}()
	for {
		cs, _, err := api.ListConnections(ctx, tok.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 1 {
			break
		}
		if subCtx.Err() != nil {
			t.Fatal("the subscriber never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, _, errOut = runClient(t, ctx, "pub", "--url", url, "--token", tok.Secret, "sensors/room1/temp", `{"c":21.5}`)
	if code != 1 || errOut != "gatecast pub: closed by the broker: 4004 connection limit reached\n" {
		t.Fatalf("pub over max_connections: exit %d %q", code, errOut)
	}
	if _, err := api.UpdateToken(ctx, tok.ID, admin.UpdateTokenRequest{MaxConnections: new(2)}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runClient(t, ctx, "pub", "--url", url, "--token", tok.Secret, "sensors/room1/temp", `{"c":21.5}`)
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("pub with the right token: exit %d\nstdout: %q\nstderr: %q", code, out, errOut)
	}
	wg.Wait()
	if subCode != 0 || subOut != `{"tag":"sensors/room1/temp","message":{"c":21.5}}`+"\n" || subErr != "" {
		t.Fatalf("sub with the right token: exit %d\nstdout: %q\nstderr: %q", subCode, subOut, subErr)
	}
}

// The bytes after the 101 response are read first, deterministically: a
// server that writes the response and its close frame in one write.
func TestClientCLICloseFrameWithUpgrade(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				var b bytes.Buffer
				b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
					"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
				ws.WriteFrame(&b, ws.NewCloseFrame(ws.NewCloseFrameBody(4003, "invalid token")))
				c.Write(b.Bytes()) // one write: the close frame comes with the 101
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					// wait for the client to close, as the broker does
					if _, err := ws.ReadFrame(c); err != nil {
						return
					}
				}
			}()
		}
	}()
	url := "ws://" + ln.Addr().String() + "/ws/brocker/"
	for _, cmd := range []string{"pub", "sub"} {
		args := []string{cmd, "--url", url, "--token", "x", "--tags", "a"}
		if cmd == "pub" {
			args = append(args, "a", "1")
		}
		code, out, errOut := runClient(t, t.Context(), args...)
		if code != 1 || out != "" || errOut != "gatecast "+cmd+": closed by the broker: 4003 invalid token\n" {
			t.Errorf("%s: exit %d\nstdout: %q\nstderr: %q", cmd, code, out, errOut)
		}
	}
}

// pub and sub have their own flags (--count is sub's), print their help on
// stdout when asked, and answer a typo with one line naming the closest
// flag (exit 2) instead of the whole help.
func TestClientCLIFlags(t *testing.T) {
	code, out, errOut := runClient(t, t.Context(), "pub", "--help")
	if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: gatecast pub") || strings.Contains(out, "count") ||
		!strings.Contains(out, "-token") || !strings.Contains(out, "-tags") || !strings.Contains(out, "-url") {
		t.Fatalf("pub --help: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = runClient(t, t.Context(), "sub", "-h")
	if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: gatecast sub") || !strings.Contains(out, "-count") {
		t.Fatalf("sub -h: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pub", "--count", "1", "a", "b"}, "gatecast pub: unknown flag --count (it is a flag of gatecast sub: pub sends one message)"},
		{[]string{"pub", "--tokn", "x", "a", "b"}, "gatecast pub: unknown flag --tokn; did you mean --token?"},
		{[]string{"pub", "a", "b", "--ulr", "ws://x"}, "gatecast pub: unknown flag --ulr; did you mean --url?"},
		{[]string{"sub", "--tag", "a/#"}, "gatecast sub: unknown flag --tag; did you mean --tags?"},
		{[]string{"sub", "--tags", "a", "--cuont", "1"}, "gatecast sub: unknown flag --cuont; did you mean --count?"},
		{[]string{"sub", "--frobnicate"}, "gatecast sub: unknown flag --frobnicate\n"},
		{[]string{"pub", "a"}, "gatecast pub: needs TOPIC and MESSAGE, got 1 argument(s)"},
		{[]string{"sub", "--token", "x"}, "gatecast sub: needs --tags"},
		{[]string{"sub", "a/#"}, `gatecast sub: takes no arguments, got ["a/#"]`},
		{[]string{"sub", "--count", "many", "--tags", "a"}, `gatecast sub: invalid value "many" for flag -count`},
	} {
		code, out, errOut := runClient(t, t.Context(), tc.args...)
		cmd := tc.args[0]
		if code != 2 || out != "" || !strings.HasPrefix(errOut, tc.want) || !strings.HasSuffix(errOut, "\nRun \"gatecast "+cmd+" --help\".\n") ||
			strings.Count(errOut, "\n") != 2 {
			t.Errorf("%v: exit %d, want 2 and %q in two lines\nstdout: %s\nstderr: %s", tc.args, code, tc.want, out, errOut)
		}
	}

	// flags after the arguments, and a negative number as MESSAGE, reach
	// the broker (which refuses the token)
	n := testNode(t)
	url := "ws://" + n.WSAddr() + "/ws/brocker/"
	for _, args := range [][]string{
		{"pub", "sensors/x", "1", "--url", url, "--token", "not-the-secret"},
		{"pub", "--url", url, "--token", "not-the-secret", "sensors/x", "-5"},
		{"pub", "--url", url, "--token", "not-the-secret", "--", "sensors/x", "--not-a-flag"},
		{"sub", "--url", url, "--token", "not-the-secret", "--count", "1", "--tags", "a/#"},
	} {
		code, _, errOut := runClient(t, t.Context(), args...)
		if code != 1 || !strings.HasSuffix(errOut, "closed by the broker: 4003 invalid token\n") {
			t.Errorf("%v: exit %d %q, want 1 and 4003", args, code, errOut)
		}
	}
}
