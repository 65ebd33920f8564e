package topic

// subList is an immutable snapshot of the subscribers of one filter, published
// through an atomic.Pointer and replaced on every change (copy-on-write).
//
// A plain copy-on-write slice would make adding the k-th subscriber of a
// popular filter ("alerts/#" watched by 100k dashboards) cost O(k), so a
// connect storm would be quadratic. Instead subscribers live in immutable
// chunks of chunkSize plus a partial tail:
//   - add appends in place past the end of the current snapshot's tail (and
//     of its chunk pointer slice): no reader of any older snapshot ever reads
//     beyond its own length, so this is safe, and it is amortised O(1). This
//     relies on the invariant that the current snapshot is the longest one
//     sharing a backing array, so every removal hands out capped slices
//     (s[:n:n]) or fresh copies, forcing the next append to reallocate;
//   - remove moves the last subscriber into the hole, copying only the one
//     chunk touched and the chunk pointer slice: O(chunkSize + k/chunkSize);
//   - membership is a linear scan for small sets and a writer-only position
//     map for large ones.
//
// Readers use only full, tail and appendTo. pos is read and written only by
// writers holding the owning lock; it is shared by successive snapshots.
type subList[S comparable] struct {
	full []*[chunkSize]S
	tail []S // len(tail) < chunkSize
	pos  map[S]int
}

const (
	chunkSize = 64
	// smallSet is the size above which a position map replaces linear scans.
	smallSet = 16
)

func (l *subList[S]) len() int {
	if l == nil {
		return 0
	}
	return len(l.full)*chunkSize + len(l.tail)
}

// appendTo appends every subscriber to dst. Any goroutine.
func (l *subList[S]) appendTo(dst []S) []S {
	for _, c := range l.full {
		dst = append(dst, c[:]...)
	}
	return append(dst, l.tail...)
}

func (l *subList[S]) at(i int) S {
	if c := i / chunkSize; c < len(l.full) {
		return l.full[c][i%chunkSize]
	}
	return l.tail[i-len(l.full)*chunkSize]
}

// indexOf returns the position of s or -1. Writer only.
func (l *subList[S]) indexOf(s S) int {
	if l == nil {
		return -1
	}
	if l.pos != nil {
		if p, ok := l.pos[s]; ok {
			return p
		}
		return -1
	}
	for i, n := 0, l.len(); i < n; i++ {
		if l.at(i) == s {
			return i
		}
	}
	return -1
}

// with returns a new snapshot with s appended; s must be absent. l may be
// nil (empty). Writer only.
func (l *subList[S]) with(s S) *subList[S] {
	if l == nil {
		return &subList[S]{tail: []S{s}}
	}
	n := &subList[S]{full: l.full, pos: l.pos}
	idx := l.len()
	if len(l.tail) == chunkSize-1 {
		c := new([chunkSize]S)
		copy(c[:], l.tail)
		c[chunkSize-1] = s
		n.full = append(l.full, c)
	} else {
		n.tail = append(l.tail, s)
	}
	switch {
	case n.pos != nil:
		n.pos[s] = idx
	case idx+1 > smallSet:
		n.pos = make(map[S]int, idx+1)
		for i := 0; i <= idx; i++ {
			n.pos[n.at(i)] = i
		}
	}
	return n
}

// without returns a new snapshot without the subscriber at position i, or
// nil when that was the last one. Writer only.
func (l *subList[S]) without(i int) *subList[S] {
	last := l.len() - 1
	if last == 0 {
		return nil
	}
	removed, moved := l.at(i), l.at(last)
	// Drop the last element, with capped slices so that the next append
	// cannot write into memory an older snapshot still reads.
	var full []*[chunkSize]S
	var tail []S
	if k := len(l.tail); k > 0 {
		full, tail = l.full, l.tail[:k-1:k-1]
	} else {
		k := len(l.full) - 1
		full, tail = l.full[:k:k], l.full[k][:chunkSize-1:chunkSize-1]
	}
	if i != last {
		if c := i / chunkSize; c < len(full) {
			nc := new([chunkSize]S)
			*nc = *full[c]
			nc[i%chunkSize] = moved
			nf := make([]*[chunkSize]S, len(full))
			copy(nf, full)
			nf[c] = nc
			full = nf
		} else {
			nt := make([]S, len(tail))
			copy(nt, tail)
			nt[i-len(full)*chunkSize] = moved
			tail = nt
		}
	}
	n := &subList[S]{full: full, tail: tail, pos: l.pos}
	if n.pos != nil {
		delete(n.pos, removed)
		if i != last {
			n.pos[moved] = i
		}
		if last < smallSet/2 {
			n.pos = nil
		}
	}
	return n
}
