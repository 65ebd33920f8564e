package proto

import (
	"sync"
	"testing"
)

func TestFrameAcquire(t *testing.T) {
	f := AcquireFrame()
	if len(f.B) != 0 || f.refs.Load() != 1 {
		t.Fatalf("fresh frame: len(B)=%d refs=%d, want 0 and 1", len(f.B), f.refs.Load())
	}
	f.B = append(f.B, "payload"...)
	f.Release()
	// Whatever the pool hands out next is empty with one reference, even
	// if it is the frame just released.
	g := AcquireFrame()
	if len(g.B) != 0 || g.refs.Load() != 1 {
		t.Fatalf("reacquired frame: len(B)=%d refs=%d, want 0 and 1", len(g.B), g.refs.Load())
	}
	g.Release()
}

func TestFrameRetainRelease(t *testing.T) {
	f := AcquireFrame()
	f.Retain()
	f.Retain()
	if n := f.refs.Load(); n != 3 {
		t.Fatalf("refs after two Retain = %d, want 3", n)
	}
	f.Release()
	f.Release()
	if n := f.refs.Load(); n != 1 {
		t.Fatalf("refs after two Release = %d, want 1", n)
	}
	f.Release()
	if n := f.refs.Load(); n != 0 {
		t.Fatalf("refs after last Release = %d, want 0", n)
	}
}

func TestFrameDoubleReleasePanics(t *testing.T) {
	// Not from the pool: the test must own the frame outright, since a
	// pooled one could be handed to another test after its last Release.
	f := &Frame{}
	f.refs.Store(1)
	f.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("releasing a frame more often than it was retained did not panic")
		}
	}()
	f.Release()
}

// TestFrameConcurrentOwners: owners on many goroutines release one shared
// frame; the count reaches zero exactly once, after all of them.
func TestFrameConcurrentOwners(t *testing.T) {
	const owners = 64
	for round := 0; round < 50; round++ {
		f := AcquireFrame()
		for i := 1; i < owners; i++ {
			f.Retain()
		}
		var wg sync.WaitGroup
		for i := 0; i < owners-1; i++ {
			wg.Go(f.Release)
		}
		wg.Wait()
		if n := f.refs.Load(); n != 1 {
			t.Fatalf("round %d: refs = %d after all but one Release, want 1", round, n)
		}
		f.Release()
	}
}
