package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Dial opens a seed-protocol connection with the token and tags in the
// `Authorization: Token …` and `Tag:` headers, as seed clients send them.
func Dial(ctx context.Context, url, token string, tags []string) (net.Conn, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Token "+token)
	}
	if len(tags) > 0 {
		h.Set("Tag", strings.Join(tags, ","))
	}
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h), Timeout: 10 * time.Second}
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		// The dialer read past the 101 response: the bytes after it (a
		// refused connection's close frame, sent right after the upgrade)
		// are in br and must be read before the socket.
		return &bufferedConn{Conn: conn, br: br}, nil
	}
	return conn, nil
}

// bufferedConn reads what the dialer buffered after the handshake, then the
// connection. One reader at a time, as for any net.Conn read loop.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader // nil once drained
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p) // only buffered bytes: never reads the socket
		}
		ws.PutReader(c.br)
		c.br = nil
	}
	return c.Conn.Read(p)
}

// SeedMessage is the seed protocol's frame, both directions.
type SeedMessage struct {
	Tag     string          `json:"tag"`
	Message json.RawMessage `json:"message"`
}

// CloseError is a close frame received from the broker.
type CloseError = wsutil.ClosedError

// RunClientCLI implements `gatecast sub` and `gatecast pub`.
func RunClientCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := args[0]
	fs := flag.NewFlagSet("gatecast "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "ws://127.0.0.1:8080/ws/brocker/", "broker WebSocket URL")
	token := fs.String("token", "", "token secret (sent as 'Authorization: Token <secret>')")
	tags := fs.String("tags", "", "comma-separated subscriptions (sent as the 'Tag' header); pub defaults to the topic")
	count := fs.Int("count", 0, "sub: exit after this many messages (0 = until closed or Ctrl-C)")
	fs.Usage = func() {
		if cmd == "sub" {
			fmt.Fprintln(stderr, "Usage: gatecast sub --token SECRET --tags 'a/#,b/+' [--url URL] [--count N]\nPrints every message received as one JSON line.")
		} else {
			fmt.Fprintln(stderr, "Usage: gatecast pub --token SECRET [--tags T] [--url URL] TOPIC MESSAGE\nMESSAGE is sent as JSON if it parses as JSON, else as a JSON string.")
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var tagList []string
	for _, t := range strings.Split(*tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tagList = append(tagList, t)
		}
	}
	switch cmd {
	case "pub":
		if fs.NArg() != 2 {
			fs.Usage()
			return 2
		}
		if len(tagList) == 0 {
			tagList = []string{fs.Arg(0)}
		}
		return pub(ctx, *url, *token, tagList, fs.Arg(0), fs.Arg(1), stderr)
	default:
		if fs.NArg() != 0 || len(tagList) == 0 {
			fs.Usage()
			return 2
		}
		return sub(ctx, *url, *token, tagList, *count, stdout, stderr)
	}
}

func pub(ctx context.Context, url, token string, tags []string, topic, message string, stderr io.Writer) int {
	conn, err := Dial(ctx, url, token, tags)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast pub:", err)
		return 1
	}
	defer conn.Close()
	raw := json.RawMessage(message)
	if !json.Valid(raw) {
		raw, _ = json.Marshal(message)
	}
	frame, _ := json.Marshal(SeedMessage{Tag: topic, Message: raw})
	// The message, then a ping: the broker handles a connection's frames in
	// order, so its pong means it admitted the connection and read the
	// message. A refused connection is closed right after the upgrade, and
	// its close frame comes before any pong: report it instead of success.
	err = wsutil.WriteClientText(conn, frame)
	if err == nil {
		err = wsutil.WriteClientMessage(conn, ws.OpPing, pubPing)
	}
	if err == nil {
		err = awaitPong(ctx, conn, pubPing)
	}
	if err != nil {
		// even when the write failed, a close frame may explain why
		if ce, ok := readClose(conn); ok {
			err = ce
		}
		return clientFailed(stderr, "pub", err)
	}
	sayGoodbye(conn)
	return 0
}

// pubPing is the payload of pub's ping, to recognise its pong.
var pubPing = []byte("gatecast pub")

// pubConfirmTimeout bounds the wait for the broker to confirm a publish.
const pubConfirmTimeout = 10 * time.Second

// awaitPong reads until the pong for payload (nil), a close frame
// (CloseError) or an error. Other frames (a delivery) are skipped.
func awaitPong(ctx context.Context, conn net.Conn, payload []byte) error {
	deadline := time.Now().Add(pubConfirmTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	defer conn.SetReadDeadline(time.Time{})
	for {
		f, err := ws.ReadFrame(conn)
		if err != nil {
			return err
		}
		switch f.Header.OpCode {
		case ws.OpPong:
			if string(f.Payload) == string(payload) {
				return nil
			}
		case ws.OpClose:
			ce := closeError(f.Payload)
			_ = wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ce.Code, "")) // the close handshake's answer
			return ce
		case ws.OpPing:
			if err := wsutil.WriteClientMessage(conn, ws.OpPong, f.Payload); err != nil {
				return err
			}
		}
	}
}

// readClose looks briefly for a close frame already sent by the broker.
func readClose(conn net.Conn) (CloseError, bool) {
	conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		f, err := ws.ReadFrame(conn)
		if err != nil {
			return CloseError{}, false
		}
		if f.Header.OpCode == ws.OpClose {
			return closeError(f.Payload), true
		}
	}
}

func closeError(payload []byte) CloseError {
	code, reason := ws.ParseCloseFrameData(payload)
	return CloseError{Code: code, Reason: reason}
}

// clientFailed reports why pub or sub failed (exit 1): the broker's close
// code and reason, or a connection that ended without one.
func clientFailed(stderr io.Writer, cmd string, err error) int {
	var ce wsutil.ClosedError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "gatecast %s: closed by the broker: %d %s\n", cmd, ce.Code, ce.Reason)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		fmt.Fprintf(stderr, "gatecast %s: the broker closed the connection without a close frame\n", cmd)
	case errors.Is(err, os.ErrDeadlineExceeded):
		fmt.Fprintf(stderr, "gatecast %s: the broker did not answer within %s\n", cmd, pubConfirmTimeout)
	default:
		fmt.Fprintf(stderr, "gatecast %s: %v\n", cmd, err)
	}
	return 1
}

// sayGoodbye closes the connection as a WebSocket client should: a close
// frame, then the socket (the broker answers and drops its side).
func sayGoodbye(conn net.Conn) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
}

func sub(ctx context.Context, url, token string, tags []string, count int, stdout, stderr io.Writer) int {
	conn, err := Dial(ctx, url, token, tags)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast sub:", err)
		return 1
	}
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for n := 0; count == 0 || n < count; n++ {
		data, op, err := wsutil.ReadServerData(conn)
		if err != nil {
			var ce wsutil.ClosedError
			if ctx.Err() != nil && !errors.As(err, &ce) {
				return 0 // Ctrl-C
			}
			return clientFailed(stderr, "sub", err)
		}
		if op == ws.OpText {
			fmt.Fprintln(stdout, string(data))
		}
	}
	sayGoodbye(conn)
	return 0
}
