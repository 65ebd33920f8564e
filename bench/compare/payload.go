package compare

import "strconv"

// MinPayloadSize is the smallest message size the harness can build: the
// JSON object with a 20-character time stamp and an empty padding string.
const MinPayloadSize = len(`{"t":-9223372036854775808,"p":""}`)

// appendPayload appends the benchmark message: the JSON object
// {"t":<sent>,"p":"xxx…"} padded with 'x' to exactly size bytes (or the
// shortest such object when size is smaller). sent is the send time in Unix
// nanoseconds; a negative value marks a warm-up message (see package doc).
func appendPayload(dst []byte, size int, sent int64) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, `,"p":"`...)
	for n := size - 2 - (len(dst) - start); n > 0; {
		k := min(n, len(padding))
		dst = append(dst, padding[:k]...)
		n -= k
	}
	return append(dst, `"}`...)
}

// padding fills a payload up to its size, a chunk at a time (the harness
// builds every message it sends: at millions a second, a byte at a time
// costs the harness CPU the measurement needs).
const padding = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

// payloadTime returns the t field of a benchmark message built by
// appendPayload. ok is false for anything else (another payload shape, a
// number that does not fit in int64, t == 0).
func payloadTime(p []byte) (t int64, ok bool) {
	const prefix = `{"t":`
	if len(p) < len(prefix)+2 || string(p[:len(prefix)]) != prefix {
		return 0, false
	}
	i := len(prefix)
	neg := false
	if p[i] == '-' {
		neg = true
		i++
	}
	start := i
	var v uint64
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		if i-start >= 19 { // more than 19 digits cannot fit in int64
			return 0, false
		}
		v = v*10 + uint64(p[i]-'0')
	}
	if i == start || i == len(p) || p[i] != ',' || v == 0 {
		return 0, false
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v-1) - 1, true
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}
