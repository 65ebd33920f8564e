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
	"strconv"
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

// RunClientCLI implements `gatecast sub` and `gatecast pub` (args[0]).
// Flags may come before or after the arguments; "--" ends them.
func RunClientCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := args[0]
	fs := flag.NewFlagSet("gatecast "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", "ws://127.0.0.1:8080/ws/brocker/", "broker WebSocket URL")
	token := fs.String("token", "", "token secret (sent as 'Authorization: Token <secret>')")
	var tags *string
	var count *int
	var usage string
	if cmd == "sub" {
		tags = fs.String("tags", "", "comma-separated subscriptions, MQTT-style filters (sent as the 'Tag' header); required")
		count = fs.Int("count", 0, "exit after this many messages (0 = until closed or Ctrl-C)")
		usage = "Usage: gatecast sub --token SECRET --tags 'a/#,b/+' [--url URL] [--count N]\n" +
			"Prints every message received as one JSON line; exits 1 with the broker's close code and reason if it closes the connection.\n"
	} else {
		tags = fs.String("tags", "", "comma-separated subscriptions sent as the 'Tag' header (default: the topic)")
		usage = "Usage: gatecast pub --token SECRET [--tags T] [--url URL] TOPIC MESSAGE\n" +
			"MESSAGE is sent as JSON if it parses as JSON, else as a JSON string. Exit 0 once the broker has read it\n" +
			"(a topic outside the token's readwrite grants is dropped by the broker, as in the seed); exit 1 with the\n" +
			"broker's close code and reason if it refuses the connection.\n"
	}
	fail := func(msg string) int {
		fmt.Fprintf(stderr, "gatecast %s: %s\nRun \"gatecast %s --help\".\n", cmd, msg, cmd)
		return 2
	}
	pos, err := parseInterleaved(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			msg := "unknown flag --" + name
			if name == "count" && cmd == "pub" {
				msg += " (it is a flag of gatecast sub: pub sends one message)"
			} else if s := suggest(name, flagNames(fs)); s != "" {
				msg += "; did you mean --" + s + "?"
			}
			return fail(msg)
		}
		return fail(err.Error())
	}
	var tagList []string
	for _, t := range strings.Split(*tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tagList = append(tagList, t)
		}
	}
	if cmd == "pub" {
		if len(pos) != 2 {
			return fail(fmt.Sprintf("needs TOPIC and MESSAGE, got %d argument(s)", len(pos)))
		}
		if len(tagList) == 0 {
			tagList = []string{pos[0]}
		}
		return pub(ctx, *url, *token, tagList, pos[0], pos[1], stderr)
	}
	if len(pos) != 0 {
		return fail(fmt.Sprintf("takes no arguments, got %q (subscriptions go in --tags)", pos))
	}
	if len(tagList) == 0 {
		return fail("needs --tags, the subscriptions (e.g. --tags 'sensors/#')")
	}
	return sub(ctx, *url, *token, tagList, *count, stdout, stderr)
}

// parseInterleaved parses flags anywhere among args and returns the
// positional arguments; everything after "--" is positional, and so is a
// negative number (pub's MESSAGE may be -5).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
			if _, nerr := strconv.ParseFloat(name, 64); !ok || nerr != nil {
				return nil, err
			}
			pos = append(pos, "-"+name) // the flag package moved past it
			args = fs.Args()
			continue
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func flagNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// suggest returns the known flag closest to a mistyped one: the only one it
// starts (3 letters at least), or one at most 1 edit away (2 beyond 4
// letters), else "". A copy of admin.Suggest: loadtest, the outside
// client, does not import the broker's packages.
func suggest(got string, known []string) string {
	got = strings.ToLower(got)
	var prefixed []string
	for _, k := range known {
		if len(got) >= 3 && strings.HasPrefix(k, got) {
			prefixed = append(prefixed, k)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	limit := 1
	if len(got) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, k := range known {
		if d := editDistance(got, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance (insertions,
// deletions, substitutions, swaps of neighbours; bytes).
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
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
