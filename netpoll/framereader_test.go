package netpoll

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unicode/utf8"

	cwnetpoll "github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
)

// frameEvent is one thing a decoder reports, for comparing decoders.
type frameEvent struct {
	kind    byte // 't' text, 'b' binary, 'p' ping, 'o' pong, 'c' close
	payload string
}

func (e frameEvent) String() string { return fmt.Sprintf("%c:%q", e.kind, e.payload) }

// recordingSink records what the frame reader delivers.
type recordingSink struct{ events []frameEvent }

func (s *recordingSink) onMessage(text bool, payload []byte) {
	k := byte('b')
	if text {
		k = 't'
	}
	s.events = append(s.events, frameEvent{k, string(payload)})
}

func (s *recordingSink) admitJoined() bool { return true }

func (s *recordingSink) onJoined(payload []byte) {
	s.events = append(s.events, frameEvent{'b', string(payload)})
}

// joinedEvents is what a ByteStreamSession's view of events is: empty
// binary messages vanish, and consecutive binary messages become one.
func joinedEvents(events []frameEvent) []frameEvent {
	var out []frameEvent
	for _, e := range events {
		switch {
		case e.kind == 'b' && e.payload == "":
		case e.kind == 'b' && len(out) > 0 && out[len(out)-1].kind == 'b':
			out[len(out)-1].payload += e.payload
		default:
			out = append(out, e)
		}
	}
	return out
}

func (s *recordingSink) onControl(op byte, payload []byte) bool {
	k := map[byte]byte{opPing: 'p', opPong: 'o', opClose: 'c'}[op]
	s.events = append(s.events, frameEvent{k, string(payload)})
	return op == opClose
}

// decodeChunks feeds data to a frameReader in chunks (sizes from splits,
// the rest in one chunk) and returns the events and how the stream ended:
// code is the close code of a protocol error (0 if none), stopped reports a
// close frame.
//
// With join, binary frames go through a joiner, as for a ByteStreamSession.
func decodeChunks(data, splits []byte, maxSize int, join bool) (events []frameEvent, code uint16, stopped bool) {
	data = bytes.Clone(data) // the reader unmasks in place
	var r frameReader
	defer r.reset()
	sink := &recordingSink{}
	var j *joiner
	if join {
		j = &joiner{}
		defer func() { putBuf(j.buf) }()
	}
	for len(data) > 0 {
		n, head := len(data), 0
		if len(splits) > 0 {
			// The low six bits size the chunk, the top two place a buffer
			// node boundary in it (none, or at a quarter, half, three
			// quarters): Contiguous stops there, as netpoll's does at the
			// end of a node.
			n = min(n, int(splits[0])%64+1)
			head = int(splits[0]>>6) * n / 4
			splits = splits[1:]
		}
		src := &sliceSource{b: data[:n], head: head}
		data = data[n:]
		stop, err := r.consume(src, maxSize, 0, sink, j)
		if src.Len() != 0 && err == nil && !stop {
			panic("consume left input unconsumed")
		}
		if err != nil {
			var pe *protocolError
			if !errors.As(err, &pe) {
				panic("consume returned a non-protocol error")
			}
			return sink.events, pe.code, false
		}
		if stop {
			return sink.events, 0, true
		}
	}
	return sink.events, 0, false
}

// referenceDecode decodes data as a whole with gobwas's ws.ReadHeader /
// ws.ReadFrame and gobwas's validity checks (ws.CheckHeader,
// ws.CheckCloseFrameData), plus the rules gobwas leaves to the caller:
// message size limit, UTF-8 of text messages, and close codes above 4999.
// Checks decidable from a frame's first two bytes apply as soon as those
// bytes exist, as in the frame reader.
func referenceDecode(data []byte, maxSize int) (events []frameEvent, code uint16, stopped bool) {
	var fragOp ws.OpCode
	var msg []byte
	rest := data
	for len(rest) >= 2 {
		early := ws.Header{
			Fin:    rest[0]&0x80 != 0,
			Rsv:    (rest[0] >> 4) & 0x7,
			OpCode: ws.OpCode(rest[0] & 0x0f),
			Masked: rest[1]&0x80 != 0,
			Length: int64(rest[1] & 0x7f),
		}
		state := ws.StateServerSide
		if fragOp != 0 {
			state = state.Set(ws.StateFragmented)
		}
		if ws.CheckHeader(early, state) != nil {
			return events, 1002, false
		}
		h, err := ws.ReadHeader(bytes.NewReader(rest))
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			return events, 1002, false
		}
		if err != nil {
			return events, 0, false // truncated header
		}
		if h.OpCode.IsData() && h.Length > int64(maxSize-len(msg)) {
			return events, 1009, false
		}
		rd := bytes.NewReader(rest)
		f, err := ws.ReadFrame(rd)
		if err != nil {
			return events, 0, false // truncated payload
		}
		rest = rest[len(rest)-rd.Len():]
		f = ws.UnmaskFrameInPlace(f)
		switch f.Header.OpCode {
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
			if f.Header.OpCode != ws.OpContinuation {
				fragOp = f.Header.OpCode
			}
			msg = append(msg, f.Payload...)
			if !f.Header.Fin {
				continue
			}
			if fragOp == ws.OpText && !utf8.Valid(msg) {
				return events, 1007, false
			}
			k := byte('b')
			if fragOp == ws.OpText {
				k = 't'
			}
			events = append(events, frameEvent{k, string(msg)})
			msg, fragOp = msg[:0], 0
		case ws.OpPing:
			events = append(events, frameEvent{'p', string(f.Payload)})
		case ws.OpPong:
			events = append(events, frameEvent{'o', string(f.Payload)})
		case ws.OpClose:
			if len(f.Payload) == 1 {
				return events, 1002, false
			}
			if len(f.Payload) >= 2 {
				c, reason := ws.ParseCloseFrameData(f.Payload)
				if c > 4999 { // undefined by RFC 6455; gobwas lets it pass
					return events, 1002, false
				}
				switch err := ws.CheckCloseFrameData(c, reason); {
				case errors.Is(err, ws.ErrProtocolInvalidUTF8):
					return events, 1007, false
				case err != nil:
					return events, 1002, false
				}
			}
			events = append(events, frameEvent{'c', string(f.Payload)})
			return events, 0, true
		}
	}
	return events, 0, false
}

// FuzzFrameReader feeds arbitrary bytes, split at arbitrary points, to the
// frame reader: it must never panic, must consume all its input, and must
// agree with the gobwas-based reference decoder on every event, every close
// code and on where a close frame stops the stream.
func FuzzFrameReader(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		const maxSize = 256
		got, gotCode, gotStop := decodeChunks(data, splits, maxSize, false)
		want, wantCode, wantStop := referenceDecode(data, maxSize)
		if !slices.Equal(got, want) || gotCode != wantCode || gotStop != wantStop {
			t.Fatalf("reader:    %v code %d stop %v\nreference: %v code %d stop %v", got, gotCode, gotStop, want, wantCode, wantStop)
		}
		got, gotCode, gotStop = decodeChunks(data, splits, maxSize, true)
		if want = joinedEvents(want); !slices.Equal(joinedEvents(got), want) || gotCode != wantCode || gotStop != wantStop {
			t.Fatalf("joined:    %v code %d stop %v\nreference: %v code %d stop %v", got, gotCode, gotStop, want, wantCode, wantStop)
		}
	})
}

// fuzzSeeds are the in-code seeds (the committed corpus under
// testdata/fuzz/FuzzFrameReader holds the same and more).
func fuzzSeeds() [][2][]byte {
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	return [][2][]byte{
		{clientFrame(true, 0, opText, []byte("hello")), nil},
		{cat(clientFrame(true, 0, opText, []byte("a")), clientFrame(true, 0, opBinary, []byte{0, 1})), []byte{0, 3, 1}},
		{cat(clientFrame(false, 0, opText, []byte("He")), clientFrame(true, 0, opPing, []byte("p")),
			clientFrame(true, 0, opContinuation, []byte("llo"))), []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{clientFrame(true, 0, opBinary, bytes.Repeat([]byte("x"), 200)), []byte{7, 63, 63}},
		{clientFrame(true, 0, opClose, append([]byte{0x03, 0xe8}, "bye"...)), nil},
		{[]byte{0x81, 0x02, 'h', 'i'}, nil},
		{clientFrame(true, 0, opBinary, bytes.Repeat([]byte("x"), 300)), nil},
		{clientFrame(true, 0, opText, []byte{0xff}), nil},
		{[]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, nil},
		{cat(clientFrame(true, 0, opPong, nil), clientFrame(true, 0, opPing, nil)), nil},
		{clientFrame(true, 0, opText, []byte("truncated"))[:8], nil},
	}
}

// nopSink discards everything (for allocation tests and benchmarks).
type nopSink struct{ n int }

func (s *nopSink) onMessage(_ bool, p []byte)      { s.n += len(p) }
func (s *nopSink) onControl(_ byte, _ []byte) bool { return false }
func (s *nopSink) admitJoined() bool               { return true }
func (s *nopSink) onJoined(p []byte)               { s.n += len(p) }

func TestFrameReaderTable(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		splits []byte
		want   []frameEvent
		code   uint16
		stop   bool
	}{
		{
			name: "two messages in one read",
			data: bytes.Join([][]byte{clientFrame(true, 0, opText, []byte("one")), clientFrame(true, 0, opText, []byte("two"))}, nil),
			want: []frameEvent{{'t', "one"}, {'t', "two"}},
		},
		{
			name:   "header split after one byte",
			data:   clientFrame(true, 0, opText, []byte("split")),
			splits: []byte{0, 0, 0},
			want:   []frameEvent{{'t', "split"}},
		},
		{
			name:   "64-bit length frame in pieces",
			data:   clientFrame(true, 0, opBinary, bytes.Repeat([]byte{7}, 70000)),
			splits: bytes.Repeat([]byte{63}, 100),
			want:   []frameEvent{{'b', string(bytes.Repeat([]byte{7}, 70000))}},
		},
		{
			name: "close stops the reader",
			data: bytes.Join([][]byte{clientFrame(true, 0, opClose, []byte{0x03, 0xe8}), clientFrame(true, 0, opText, []byte("late"))}, nil),
			want: []frameEvent{{'c', "\x03\xe8"}},
			stop: true,
		},
		{
			name: "too big fails before the payload arrives",
			data: clientFrame(true, 0, opBinary, make([]byte, 100001))[:20],
			code: 1009,
		},
		{
			name: "control frames between fragments",
			data: bytes.Join([][]byte{
				clientFrame(false, 0, opBinary, []byte{1}),
				clientFrame(true, 0, opPong, []byte("x")),
				clientFrame(true, 0, opContinuation, []byte{2}),
			}, nil),
			want: []frameEvent{{'o', "x"}, {'b', "\x01\x02"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, code, stop := decodeChunks(tc.data, tc.splits, 100000, false)
			if !slices.Equal(got, tc.want) || code != tc.code || stop != tc.stop {
				t.Fatalf("got %.80v code %d stop %v; want %.80v code %d stop %v", got, code, stop, tc.want, tc.code, tc.stop)
			}
			got, code, stop = decodeChunks(tc.data, tc.splits, 100000, true)
			if want := joinedEvents(tc.want); !slices.Equal(joinedEvents(got), want) || code != tc.code || stop != tc.stop {
				t.Fatalf("joined: got %.80v code %d stop %v; want %.80v code %d stop %v", got, code, stop, want, tc.code, tc.stop)
			}
		})
	}
}

func TestSkimForClose(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		splits []byte
	}{
		{
			name: "close after an oversized frame",
			data: bytes.Join([][]byte{clientFrame(true, 0, opBinary, make([]byte, 5000)), clientFrame(true, 0, opClose, []byte{3, 0xe8})}, nil),
		},
		{
			name:   "close after unmasked frames, byte by byte",
			data:   []byte{0x81, 0x01, 'x', 0x82, 0x00, 0x88, 0x00},
			splits: bytes.Repeat([]byte{0}, 10),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r frameReader
			defer r.reset()
			data, splits := bytes.Clone(tc.data), tc.splits
			failed, seen := false, false
			for len(data) > 0 && !seen {
				n := len(data)
				if len(splits) > 0 {
					n = min(n, int(splits[0])+1)
					splits = splits[1:]
				}
				src := &sliceSource{b: data[:n]}
				data = data[n:]
				if !failed {
					if _, err := r.consume(src, 1024, 0, &nopSink{}, nil); err != nil {
						failed = true
					}
				}
				if failed {
					seen = r.skimForClose(src)
				}
			}
			if !failed || !seen {
				t.Fatalf("protocol error %v, close seen %v", failed, seen)
			}
		})
	}
}

// TestFrameReaderAllocs: decoding and delivering a complete small masked
// text frame, and a frame that arrives in two pieces (stash path),
// allocates nothing in steady state.
func TestFrameReaderAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	frame := clientFrame(true, 0, opText, []byte(`{"tag":"sensors/1/temp","message":21.5}`))
	buf := make([]byte, len(frame))
	var r frameReader
	sink := &nopSink{}
	src := &sliceSource{}
	whole := testing.AllocsPerRun(1000, func() {
		copy(buf, frame)
		src.b = buf
		if _, err := r.consume(src, 1<<16, 0, sink, nil); err != nil {
			t.Fatal(err)
		}
	})
	split := testing.AllocsPerRun(1000, func() {
		copy(buf, frame)
		src.b = buf[:9]
		if _, err := r.consume(src, 1<<16, 0, sink, nil); err != nil {
			t.Fatal(err)
		}
		src.b = buf[9:]
		if _, err := r.consume(src, 1<<16, 0, sink, nil); err != nil {
			t.Fatal(err)
		}
	})
	if whole != 0 || split != 0 {
		t.Fatalf("allocations per frame: whole %v, split %v; want 0", whole, split)
	}
}

func BenchmarkFrameParse(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			frame := clientFrame(true, 0, opBinary, bytes.Repeat([]byte{'a'}, size))
			buf := make([]byte, len(frame))
			var r frameReader
			sink := &nopSink{}
			src := &sliceSource{}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, frame)
				src.b = buf
				if _, err := r.consume(src, 1<<20, 0, sink, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUnmaskASCII: unmaskASCII unmasks exactly as ws.Cipher does, at every
// length and mask, and reports ASCII exactly when no byte is above 0x7F.
func TestUnmaskASCII(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 70 {
		for trial := range 50 {
			var mask [4]byte
			binary.LittleEndian.PutUint32(mask[:], rng.Uint32())
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.IntN(0x80))
			}
			if trial%2 == 1 && n > 0 {
				p[rng.IntN(n)] |= 0x80
			}
			wantASCII := !slices.ContainsFunc(p, func(c byte) bool { return c >= 0x80 })
			masked := slices.Clone(p)
			ws.Cipher(masked, mask, 0)
			got := slices.Clone(masked)
			if ascii := unmaskASCII(got, mask); ascii != wantASCII {
				t.Fatalf("len %d: ascii %v, want %v", n, ascii, wantASCII)
			}
			if !bytes.Equal(got, p) {
				t.Fatalf("len %d mask %x: unmasked %x, want %x", n, mask, got, p)
			}
		}
	}
}

// BenchmarkFrameParseBurst is a fan-in device's write as the broker reads
// it: 64 text frames of ~100 bytes in one buffer. ns/op is per frame.
func BenchmarkFrameParseBurst(b *testing.B) {
	var burst []byte
	for i := range 64 {
		burst = append(burst, clientFrame(true, 0, opText, fmt.Appendf(nil, `{"tag":"fleet/dev%03d/temp","message":{"t":1733230000000000000,"p":"%040d"}}`, i, i))...)
	}
	buf := make([]byte, len(burst))
	var r frameReader
	sink := &nopSink{}
	src := &sliceSource{}
	b.SetBytes(int64(len(burst) / 64))
	b.ReportAllocs()
	n := 0
	for n < b.N {
		copy(buf, burst)
		src.b = buf
		if _, err := r.consume(src, 1<<20, 0, sink, nil); err != nil {
			b.Fatal(err)
		}
		n += 64
	}
}

// BenchmarkFrameReadLinkBuffer is BenchmarkFrameParseBurst from netpoll's
// own buffer, as on a connection: each round is one read of 64 frames
// (Malloc, copy, Flush) decoded and released.
func BenchmarkFrameReadLinkBuffer(b *testing.B) {
	var burst []byte
	for i := range 64 {
		burst = append(burst, clientFrame(true, 0, opText, fmt.Appendf(nil, `{"tag":"fleet/dev%03d/temp","message":{"t":1733230000000000000,"p":"%040d"}}`, i, i))...)
	}
	var r frameReader
	sink := &nopSink{}
	lb := cwnetpoll.NewLinkBuffer(len(burst))
	defer lb.Release()
	b.SetBytes(int64(len(burst) / 64))
	b.ReportAllocs()
	n := 0
	for n < b.N {
		buf, _ := lb.Malloc(len(burst))
		copy(buf, burst)
		_ = lb.Flush()
		if _, err := r.consume(lb, 1<<20, 0, sink, nil); err != nil {
			b.Fatal(err)
		}
		_ = lb.Release()
		n += 64
	}
}

// heldSink records messages and whether each was delivered as a view of
// the source (frameReader.held).
type heldSink struct {
	r      *frameReader
	events []frameEvent
	held   []bool
}

func (s *heldSink) onMessage(text bool, payload []byte) {
	s.events = append(s.events, frameEvent{'t', string(payload)})
	s.held = append(s.held, s.r.held)
}
func (s *heldSink) onControl(byte, []byte) bool { return false }
func (s *heldSink) admitJoined() bool           { return true }
func (s *heldSink) onJoined([]byte)             {}

// TestFrameReaderAcrossBufferNodes feeds netpoll's own LinkBuffer, written
// in uneven pieces so that its nodes end inside frames and inside headers:
// the frames that lie whole in one node are decoded from Contiguous's view
// and skipped together, the others are read across nodes (netpoll copies)
// or stashed, and every message arrives in order, byte for byte; only the
// ones read in place are held.
func TestFrameReaderAcrossBufferNodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var data []byte
	var want []frameEvent
	for i := range 400 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 1+rng.IntN(300))
		data = append(data, clientFrame(true, 0, opText, p)...)
		want = append(want, frameEvent{'t', string(p)})
	}
	var r frameReader
	defer r.reset()
	sink := &heldSink{r: &r}
	lb := cwnetpoll.NewLinkBuffer(64)
	defer lb.Release()
	nodes := 0
	for len(data) > 0 {
		for range 1 + rng.IntN(3) { // a few reads before the reader runs
			n := min(len(data), 1+rng.IntN(700))
			buf, _ := lb.Malloc(n)
			copy(buf, data[:n])
			data = data[n:]
			_ = lb.Flush()
		}
		if c := lb.Contiguous(); len(c) < lb.Len() {
			nodes++
		}
		if _, err := r.consume(lb, 1<<20, 0, sink, nil); err != nil {
			t.Fatal(err)
		}
		if lb.Len() != 0 {
			t.Fatalf("%d bytes left unread", lb.Len())
		}
	}
	if nodes == 0 {
		t.Fatal("the input never spanned two buffer nodes: the test covers nothing")
	}
	if !slices.Equal(sink.events, want) {
		t.Fatalf("got %d messages, want %d, or not the same", len(sink.events), len(want))
	}
	heldN := 0
	for _, h := range sink.held {
		if h {
			heldN++
		}
	}
	if heldN == 0 || heldN == len(sink.held) {
		t.Fatalf("%d of %d messages held: want some read in place and some not", heldN, len(sink.held))
	}
}

// BenchmarkUnmaskASCII99 unmasks and checks the payload of the harness's
// fan-in frame (99 bytes: a seed publish with a 64-byte message).
func BenchmarkUnmaskASCII99(b *testing.B) {
	p := make([]byte, 99)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	mask := [4]byte{1, 2, 3, 4}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		unmaskASCII(p, mask)
	}
}
