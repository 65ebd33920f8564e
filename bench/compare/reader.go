package compare

import (
	"io"
	"time"
)

// Sizes of a connection's read buffer: it starts at readBufMin bytes on
// the first read and doubles, up to readBufMax, whenever one read from the
// socket filled all the room it was offered (the broker had more queued),
// so that a connection receiving millions of messages a second needs few
// read system calls while the 15,000 connections of the idle scenario keep
// small buffers.
const (
	readBufMin = 8 << 10
	readBufMax = 256 << 10
)

// connReader is a connection's buffered reader (what bufio.Reader was),
// with two additions the receiving side needs at millions of messages a
// second: peek and discard, so that a WebSocket frame that is wholly
// buffered is decoded where it lies instead of being copied out, and the
// time of the latest read from the socket, the receive time of everything
// that read returned (see Conn.RecvTime).
type connReader struct {
	src  io.Reader
	buf  []byte
	r, w int   // buf[r:w] is buffered and unread
	at   int64 // Unix ns right after the latest read from src that returned bytes
	full bool  // the latest read from src filled all the room offered
}

func newConnReader(src io.Reader) *connReader { return &connReader{src: src} }

// fill reads once from src into the free room behind the buffered bytes,
// moving them to the front first and growing the buffer as described at
// readBufMin; need is the least room to offer (peek of a large frame).
func (b *connReader) fill(need int) error {
	if b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	size := len(b.buf)
	switch {
	case size == 0:
		size = readBufMin
	case b.full && size < readBufMax:
		size *= 2
	}
	for size < b.w+need {
		size *= 2
	}
	if size != len(b.buf) {
		nb := make([]byte, size)
		copy(nb, b.buf[:b.w])
		b.buf = nb
	}
	room := len(b.buf) - b.w
	n, err := b.src.Read(b.buf[b.w:])
	if n > 0 {
		b.at = time.Now().UnixNano()
		b.w += n
		b.full = n == room
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Read implements io.Reader like bufio.Reader: buffered bytes first, then
// at most one read from src.
func (b *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if err := b.fill(0); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// peek returns the next n buffered bytes, reading from src until there
// are that many; they stay valid until the next read, peek or fill. An
// error means fewer than n bytes could be had.
func (b *connReader) peek(n int) ([]byte, error) {
	for b.w-b.r < n {
		if err := b.fill(n - (b.w - b.r)); err != nil {
			return nil, err
		}
	}
	return b.buf[b.r : b.r+n], nil
}

// discard drops n buffered bytes (n ≤ what the latest peek returned).
func (b *connReader) discard(n int) { b.r += n }
