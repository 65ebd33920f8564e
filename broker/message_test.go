package broker

import "testing"

func encodeTest(dst []byte, m *Message) []byte { return append(append(dst, '<'), m.Payload...) }

func encodeOther(dst []byte, m *Message) []byte { return append(append(dst, '['), m.Topic...) }

// A message's first recipient claims it and takes its bytes by copy
// (Encode); later ones share a Frame, which copies what Encode made instead
// of encoding again. Reset keeps the buffer, not the state.
func TestMessageClaimEncode(t *testing.T) {
	encA, encB := NewEncoding(), NewEncoding()
	m := AcquireMessage()
	m.Topic, m.Payload = "a/b", []byte("payload")
	if !m.Claim() || m.Claim() {
		t.Fatal("Claim: want true once, then false")
	}
	if got := string(m.Encode(encA, encodeTest)); got != "<payload" {
		t.Fatalf("Encode: %q", got)
	}
	if got := string(m.Encode(encB, encodeOther)); got != "[a/b" {
		t.Fatalf("Encode of a second encoding: %q", got)
	}
	if got := string(m.Encode(encA, encodeOther)); got != "<payload" {
		t.Fatalf("Encode again: %q, want the first encoding", got)
	}
	f := m.Frame(encA, encodeOther)
	if string(f.B) != "<payload" {
		t.Fatalf("Frame after Encode: %q, want a copy of the encoding", f.B)
	}
	if m.Frame(encA, encodeOther) != f {
		t.Fatal("Frame: a second call made another frame")
	}
	f.Retain()
	m.Reset()
	if string(f.B) != "<payload" {
		t.Fatal("a retained frame changed when its message was reset")
	}
	f.Release()
	if !m.Claim() || m.Topic != "" || m.Payload != nil || cap(m.buf) == 0 {
		t.Fatalf("after Reset: claimable %v, topic %q, payload %q, buffer %d", true, m.Topic, m.Payload, cap(m.buf))
	}
	m.Payload = []byte("next")
	if got := string(m.Encode(encA, encodeTest)); got != "<next" {
		t.Fatalf("Encode after Reset: %q", got)
	}
	ReleaseMessage(m)
	if raceEnabled {
		return
	}
	m = AcquireMessage()
	m.Payload = []byte("x")
	m.Encode(encA, encodeTest)
	m.Reset()
	payload := []byte("0123456789")
	allocs := testing.AllocsPerRun(100, func() {
		m.Payload = payload
		m.Claim()
		m.Encode(encA, encodeTest)
		m.Encode(encB, encodeOther)
		m.Reset()
	})
	if allocs != 0 {
		t.Fatalf("Encode into a reused message: %.1f allocations", allocs)
	}
	ReleaseMessage(m)
}
