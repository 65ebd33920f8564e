package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
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
	conn, _, _, err := d.Dial(ctx, url)
	return conn, err
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
	if err := wsutil.WriteClientText(conn, frame); err != nil {
		fmt.Fprintln(stderr, "gatecast pub:", err)
		return 1
	}
	// A rejected connection is closed right after the upgrade: report it
	// instead of claiming success.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := wsutil.ReadServerData(conn); err != nil {
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "gatecast pub: closed by the broker: %d %s\n", ce.Code, ce.Reason)
			return 1
		}
	}
	_ = wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	return 0
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
			if errors.As(err, &ce) {
				fmt.Fprintf(stderr, "gatecast sub: closed by the broker: %d %s\n", ce.Code, ce.Reason)
				return 1
			}
			if ctx.Err() != nil {
				return 0
			}
			fmt.Fprintln(stderr, "gatecast sub:", err)
			return 1
		}
		if op == ws.OpText {
			fmt.Fprintln(stdout, string(data))
		}
	}
	return 0
}
