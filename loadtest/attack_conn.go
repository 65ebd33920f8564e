package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// The hostile clients' connections: plain net.Conns (a few dozen at most,
// a goroutine each is fine), an upgrade request written by hand so that its
// exact bytes and size are known, and a reader that parses the broker's
// frames, notes its close frame and how the TCP connection ended.

func newGet(ctx context.Context, u string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, "GET", u, nil)
}

// upgradeRequest returns a WebSocket upgrade request for u with the seed
// headers: Authorization: Token <secret> and Tag: <tags>.
func upgradeRequest(u *url.URL, secret, tags string) []byte {
	var key [16]byte
	_, _ = rand.Read(key[:])
	path := u.RequestURI()
	var b bytes.Buffer
	b.Grow(256 + len(secret) + len(tags))
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\n")
	b.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n")
	b.WriteString("Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n")
	if secret != "" {
		b.WriteString("Authorization: Token " + secret + "\r\n")
	}
	if tags != "" {
		b.WriteString("Tag: " + tags + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// rawConn is an upgraded connection.
type rawConn struct {
	c          net.Conn
	r          *bufio.Reader
	upgradedAt time.Time
}

// errHTTPStatus is an upgrade answered otherwise than 101.
type errHTTPStatus struct{ code int }

func (e errHTTPStatus) Error() string { return "upgrade answered HTTP " + strconv.Itoa(e.code) }

// loopbackAddrs returns 127.0.0.1 … 127.0.0.n as local TCP addresses when
// u's host is an IPv4 loopback address (connections are then bound to
// them in turn, ~28k ephemeral ports each), else nil.
func loopbackAddrs(u *url.URL, n int) []net.Addr {
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return nil
	}
	out := make([]net.Addr, n)
	for i := range out {
		out[i] = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
	}
	return out
}

// dialTCP connects to u's host (from laddr when not nil).
func dialTCP(ctx context.Context, u *url.URL, laddr net.Addr, timeout time.Duration) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	d := net.Dialer{Timeout: timeout, LocalAddr: laddr}
	return d.DialContext(ctx, "tcp", host)
}

// upgrade writes req on c and reads the response head. On 101 it returns a
// reader holding whatever followed the head (a close frame sent right after
// the upgrade, say).
func upgrade(c net.Conn, req []byte, timeout time.Duration) (*bufio.Reader, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	status, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	f := strings.Fields(status)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, fmt.Errorf("malformed upgrade response %q", strings.TrimSpace(status))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return nil, fmt.Errorf("malformed upgrade response %q", strings.TrimSpace(status))
	}
	for n := 0; ; n++ {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == "\r\n" || line == "\n" {
			break
		}
		if n > 100 {
			return nil, errors.New("upgrade response: too many header lines")
		}
	}
	if code != http.StatusSwitchingProtocols {
		return nil, errHTTPStatus{code}
	}
	return br, nil
}

// dialRaw dials and upgrades.
func dialRaw(ctx context.Context, u *url.URL, laddr net.Addr, req []byte, timeout time.Duration) (*rawConn, error) {
	c, err := dialTCP(ctx, u, laddr, timeout)
	if err != nil {
		return nil, err
	}
	br, err := upgrade(c, req, timeout)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &rawConn{c: c, r: br, upgradedAt: time.Now()}, nil
}

// closeRST closes c with a TCP reset (SO_LINGER 0): no TIME_WAIT, and the
// peer sees ECONNRESET.
func closeRST(c net.Conn) error {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

// How a connection's reading side ended.
const (
	endEOF    = "eof"    // the broker closed the TCP connection (FIN)
	endReset  = "reset"  // ECONNRESET: the broker closed with unread input (RST)
	endError  = "error"  // another read error (a protocol error in the broker's frames, …)
	endClient = "client" // we closed it (end of the drain, abort)
)

// readEnd is what the reader saw.
type readEnd struct {
	closeCode   int // 0: no close frame
	closeReason string
	closeAt     time.Time
	endAt       time.Time
	how         string
	frames      int64 // data and control frames read (close excluded)
	err         error
}

// readFrames reads the broker's frames until the connection ends,
// discarding payloads; onFrame (may be nil) sees each non-close frame's
// opcode. It never answers a close frame: a hostile client does not.
func readFrames(r *bufio.Reader, onFrame func(op ws.OpCode), onClose func(code int, reason string)) readEnd {
	return readFramesReplying(r, nil, onFrame, onClose)
}

// readFramesReplying is readFrames that answers the broker's pings with
// pongs on c (when not nil): a well-behaved idle session, which the
// broker's idle timeout leaves alone.
func readFramesReplying(r *bufio.Reader, c net.Conn, onFrame func(op ws.OpCode), onClose func(code int, reason string)) readEnd {
	var e readEnd
	for {
		h, err := readServerHeader(r)
		if err == nil && h.OpCode == ws.OpPing && c != nil {
			var p []byte
			if p, err = readN(r, int(h.Length)); err == nil {
				e.frames++
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write(appendClientFrame(nil, ws.OpPong, p, randomMask()))
				continue
			}
		}
		if err == nil && h.OpCode == ws.OpClose {
			var p []byte
			if p, err = readN(r, int(h.Length)); err == nil {
				e.closeAt = time.Now()
				if len(p) >= 2 {
					e.closeCode = int(binary.BigEndian.Uint16(p))
					e.closeReason = string(p[2:])
				} else {
					e.closeCode = int(ws.StatusNoStatusRcvd)
				}
				if onClose != nil {
					onClose(e.closeCode, e.closeReason)
				}
				continue
			}
		} else if err == nil {
			if _, err = r.Discard(int(h.Length)); err == nil {
				e.frames++
				if onFrame != nil {
					onFrame(h.OpCode)
				}
				continue
			}
		}
		e.endAt = time.Now()
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			e.how = endEOF
		case errors.Is(err, syscall.ECONNRESET):
			e.how = endReset
		case errors.Is(err, net.ErrClosed):
			e.how = endClient
		default:
			e.how, e.err = endError, err
		}
		return e
	}
}

// readServerHeader reads one frame header from r (parseHeader's checks).
func readServerHeader(r *bufio.Reader) (ws.Header, error) {
	b, err := r.Peek(2)
	if err != nil {
		return ws.Header{}, err
	}
	n := headerLen(b[1])
	if b, err = r.Peek(n); err != nil {
		return ws.Header{}, err
	}
	h, _, err := parseHeader(b)
	if err != nil {
		return h, err
	}
	_, err = r.Discard(n)
	return h, err
}

func readN(r *bufio.Reader, n int) ([]byte, error) {
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return p, err
}

// randomMask returns a fresh masking key.
func randomMask() [4]byte {
	var m [4]byte
	_, _ = rand.Read(m[:])
	return m
}

// repeatFrames returns as many whole copies of a frame carrying payload as
// fit in size bytes (at least one), each masked with its own key.
func repeatFrames(op ws.OpCode, payload []byte, size int) []byte {
	one := len(appendClientFrame(nil, op, payload, [4]byte{}))
	n := max(1, size/one)
	b := make([]byte, 0, n*one)
	for range n {
		b = appendClientFrame(b, op, payload, randomMask())
	}
	return b
}

// closeFrame returns a masked close frame with code.
func closeFrame(code ws.StatusCode) []byte {
	return appendClientFrame(nil, ws.OpClose, ws.NewCloseFrameBody(code, ""), randomMask())
}
