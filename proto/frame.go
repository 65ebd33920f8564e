package proto

import (
	"sync"
	"sync/atomic"
)

// Frame is one encoded wire frame (for WebSocket: header and payload, ready
// to write) shared by every connection it is delivered to. A message is
// encoded once into a Frame; each recipient holds one reference.
//
// Lifetime: AcquireFrame returns a Frame holding one reference, owned by the
// caller. Whoever hands the frame to another owner (for example a
// connection's outbox) calls Retain first; every owner calls Release exactly
// once when it no longer reads B. The last Release returns the frame to a
// pool, so B must not be read after one's own Release.
type Frame struct {
	refs atomic.Int32
	// B is the encoded frame. Written only by the encoder before the frame is
	// shared; read-only afterwards.
	B []byte
}

// maxPooledFrame bounds the capacity of buffers kept in the pool so that one
// large message does not pin memory forever.
const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any { return &Frame{B: make([]byte, 0, 512)} }}

// AcquireFrame returns an empty frame with one reference.
func AcquireFrame() *Frame {
	f := framePool.Get().(*Frame)
	f.B = f.B[:0]
	f.refs.Store(1)
	return f
}

// Retain adds a reference for a new owner.
func (f *Frame) Retain() { f.refs.Add(1) }

// Release drops the caller's reference; the last one recycles the frame.
func (f *Frame) Release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		if cap(f.B) <= maxPooledFrame {
			framePool.Put(f)
		}
	case n < 0:
		panic("proto: Frame released more often than retained")
	}
}
