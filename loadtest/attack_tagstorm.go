package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// TagStormReport is the tagstorm scenario: loops that connect with many
// tags and close at once, and a token disable timed under them.
type TagStormReport struct {
	Loops        int     `json:"loops"`
	Tags         int     `json:"tags"`
	TagBytes     int     `json:"tag_header_bytes"`
	RequestBytes int     `json:"upgrade_request_bytes"`
	Connects     int64   `json:"connects"` // attempts
	Upgraded     int64   `json:"upgraded"` // answered 101
	Failed       int64   `json:"failed"`   // see errors
	PerSecond    float64 `json:"connects_per_second"`
	StormSecs    float64 `json:"storm_seconds"`          // until the last loop stopped (--duration, or a ceiling)
	StormEndedAt float64 `json:"storm_ended_at_seconds"` // from the start of the run
	// UpgradedDuringDisable: 101s between the disable call's start and
	// its answer.
	UpgradedDuringDisable int64       `json:"upgraded_during_disable"`
	Handshake             Latency     `json:"handshake_latency"` // dial → 101
	Disable               DisableCall `json:"disable"`
	Witnesses             int         `json:"witnesses"`
	WitnessesUp           int         `json:"witnesses_connected"`
	Witnesses4002         int         `json:"witnesses_closed_4002"`
	WitnessesOther        []int       `json:"witnesses_other_close_codes,omitempty"` // codes other than 4002, or 0: ended without a close frame
	WitnessesOpen         int         `json:"witnesses_still_open"`                  // no close within --close-timeout
	Witness4002Ms         float64     `json:"witness_last_4002_ms,omitempty"`        // from the disable call's start
	// Sessions of the token listed by GET /api/v1/connections?token_id=…
	// right after the disable call returned, and whether (and when,
	// from the call's start) the list became empty within --close-timeout.
	SessionsAfterDisable int     `json:"sessions_after_disable"` // -1: could not be read
	SessionsGone         bool    `json:"sessions_gone"`
	SessionsGoneMs       float64 `json:"sessions_gone_ms,omitempty"`
	SessionsLeft         int     `json:"sessions_left"` // at the last check
	SessionsError        string  `json:"sessions_error,omitempty"`
}

// DisableCall is the timed PATCH /api/v1/tokens/{id} {"disabled":true}.
type DisableCall struct {
	TokenID   int64   `json:"token_id"`
	StartedAt float64 `json:"started_at_seconds"` // from the start of the run
	Ms        float64 `json:"ms"`
	Status    int     `json:"status"` // 0: no HTTP answer (see error)
	Error     string  `json:"error,omitempty"`
	Body      string  `json:"body,omitempty"` // the answer, when not 2xx (truncated)
}

// stormTags returns PREFIX/0,PREFIX/1,…,PREFIX/n-1.
func stormTags(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(prefix)
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

func (r *attackRun) tagstorm() error {
	o := r.o
	ctx := r.abortCtx
	tr := &TagStormReport{Loops: o.Loops, Tags: o.Tags, Witnesses: o.Witnesses, SessionsAfterDisable: -1}
	r.rep.TagStorm = tr
	tok, err := r.createToken(ctx, "storm")
	if err != nil {
		return err
	}
	tr.Disable.TokenID = tok.ID
	if err := r.grant(ctx, tok, o.TagPrefix+"/#", "read"); err != nil {
		return err
	}
	tags := stormTags(o.TagPrefix, o.Tags)
	req := upgradeRequest(r.target, tok.Secret, tags)
	tr.TagBytes, tr.RequestBytes = len(tags), len(req)

	// Witnesses: long-lived sessions of the token, one tag each.
	type witness struct {
		rc     *rawConn
		end    readEnd
		done   chan struct{} // the reader returned
		closed chan struct{} // a close frame arrived, or the reader returned
		once   sync.Once
		code   int
		at     time.Time
	}
	var witnessCloses atomic.Int32
	var ws []*witness
	for i := range o.Witnesses {
		rc, err := dialRaw(ctx, r.target, nil, upgradeRequest(r.target, tok.Secret, o.TagPrefix+"/w"+strconv.Itoa(i)), o.DialTimeout)
		if err != nil {
			r.errs.add("witness_" + upgradeError(err))
			continue
		}
		w := &witness{rc: rc, done: make(chan struct{}), closed: make(chan struct{})}
		go func() {
			defer close(w.done)
			w.end = readFramesReplying(rc.r, rc.c, nil, func(code int, _ string) {
				w.once.Do(func() {
					w.code, w.at = code, time.Now()
					witnessCloses.Add(1)
					close(w.closed)
				})
			})
			w.once.Do(func() { close(w.closed) })
		}()
		ws = append(ws, w)
	}
	defer func() {
		for _, w := range ws {
			_ = closeRST(w.rc.c)
			<-w.done
		}
	}()
	tr.WitnessesUp = len(ws)
	// A witness closed before the storm (refused) is not a witness.
	time.Sleep(100 * time.Millisecond)

	// The storm.
	var connects, upgraded, failed atomic.Int64
	var disableDone atomic.Bool
	var disableStart, disableEnd atomic.Int64 // unix ns
	var duringDisable atomic.Int64
	r.watch.setStatus(func(p *AttackPoint) string {
		p.Connects = connects.Load()
		p.Open = len(ws) - int(witnessCloses.Load())
		state := "before disable"
		switch {
		case disableDone.Load():
			state = "disabled"
		case disableStart.Load() != 0:
			state = fmt.Sprintf("disable call waiting %.1fs", time.Since(time.Unix(0, disableStart.Load())).Seconds())
		}
		return fmt.Sprintf("tagstorm connects %d (101: %d), witnesses without a close frame %d, %s", p.Connects, upgraded.Load(), p.Open, state)
	})
	hsHist := newHist()
	var hsMu sync.Mutex
	addrs := loopbackAddrs(r.target, o.SourceIPs)
	stormStart := time.Now()
	minEnd := stormStart.Add(o.Duration)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range o.Loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				laddr := anyAddr(addrs, k)
				k += o.Loops
				connects.Add(1)
				t0 := time.Now()
				c, err := dialTCP(ctx, r.target, laddr, o.DialTimeout)
				if err != nil {
					if ctx.Err() == nil { // not our own abort
						failed.Add(1)
						r.errs.add(upgradeError(err))
					}
					sleepOrStop(stop, 10*time.Millisecond)
					continue
				}
				_, err = upgrade(c, req, o.DialTimeout)
				if err != nil {
					failed.Add(1)
					r.errs.add(upgradeError(err))
				} else {
					upgraded.Add(1)
					now := time.Now()
					if ds := disableStart.Load(); ds != 0 && !disableDone.Load() && now.UnixNano() > ds {
						duringDisable.Add(1)
					}
					hsMu.Lock()
					recordUs(hsHist, now.Sub(t0).Nanoseconds())
					hsMu.Unlock()
				}
				if o.CloseRST {
					_ = closeRST(c)
				} else {
					_ = c.Close()
				}
			}
		}()
	}
	// The storm ends when stop closes or the attack is aborted (a
	// ceiling): its length is until the last loop returned.
	stormDone := make(chan struct{})
	var stormEnd time.Time
	go func() {
		wg.Wait()
		stormEnd = time.Now()
		close(stormDone)
	}()
	stopStorm := sync.OnceFunc(func() {
		close(stop)
		<-stormDone
		tr.StormSecs = round3(stormEnd.Sub(stormStart).Seconds())
		tr.StormEndedAt = round3(r.since(stormEnd))
	})
	defer stopStorm()

	// The disable call, after the warm-up.
	if err := sleep(ctx, o.Warmup); err != nil {
		stopStorm()
		r.tagstormTotals(tr, &connects, &upgraded, &failed, hsHist)
		return context.Cause(ctx)
	}
	callStart := time.Now()
	disableStart.Store(callStart.UnixNano())
	tr.Disable.StartedAt = round3(r.since(callStart))
	tr.Disable.Status, tr.Disable.Body, err = r.timedPatch(context.WithoutCancel(ctx), tok.ID, map[string]any{"disabled": true})
	callEnd := time.Now()
	disableEnd.Store(callEnd.UnixNano())
	disableDone.Store(true)
	tr.Disable.Ms = round3(float64(callEnd.Sub(callStart).Microseconds()) / 1000)
	if err != nil {
		tr.Disable.Error = err.Error()
	}
	tr.UpgradedDuringDisable = duringDisable.Load()

	// The token's sessions as listed right after the call; checkSessions
	// reports whether to look again.
	checkSessions := func() bool {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CloseTimeout)
		defer cancel()
		n, err := r.countSessions(cctx, tok.ID)
		if err != nil {
			tr.SessionsError = err.Error()
			return false
		}
		if tr.SessionsAfterDisable < 0 {
			tr.SessionsAfterDisable = n
		}
		tr.SessionsLeft = n
		if n == 0 {
			tr.SessionsGone = true
			tr.SessionsGoneMs = round3(float64(time.Since(callStart).Microseconds()) / 1000)
			return false
		}
		return true
	}
	checkSessions()

	// Every witness must get its 4002 (within --close-timeout).
	closeDeadline := time.NewTimer(o.CloseTimeout)
	defer closeDeadline.Stop()
	for _, w := range ws {
		select {
		case <-w.closed:
		case <-closeDeadline.C:
			closeDeadline.Reset(0)
		}
	}
	for _, w := range ws {
		select {
		case <-w.closed:
		default:
			tr.WitnessesOpen++
			continue
		}
		if w.code == 4002 {
			tr.Witnesses4002++
			tr.Witness4002Ms = max(tr.Witness4002Ms, round3(float64(w.at.Sub(callStart).Microseconds())/1000))
		} else {
			tr.WitnessesOther = append(tr.WitnessesOther, w.code)
		}
	}

	// The storm lasts at least --duration.
	if d := time.Until(minEnd); d > 0 && !r.aborted() {
		_ = sleep(ctx, d)
	}
	stopStorm()
	r.tagstormTotals(tr, &connects, &upgraded, &failed, hsHist)

	// Every session of the token gone, within --close-timeout of the call.
	if !tr.SessionsGone && tr.SessionsError == "" {
		checkCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), callEnd.Add(o.CloseTimeout))
		defer cancel()
		for sleep(checkCtx, 200*time.Millisecond) == nil {
			if !checkSessions() {
				break
			}
		}
	}
	switch {
	case r.aborted():
		return context.Cause(ctx)
	case tr.Disable.Status == 0:
		return fmt.Errorf("tagstorm: the disable call got no answer after %.0f ms: %s", tr.Disable.Ms, tr.Disable.Error)
	case tr.Disable.Status/100 != 2:
		return fmt.Errorf("tagstorm: the disable call answered HTTP %d: %s", tr.Disable.Status, tr.Disable.Body)
	}
	return nil
}

// tagstormTotals fills the storm's counts (the loops have stopped).
func (r *attackRun) tagstormTotals(tr *TagStormReport, connects, upgraded, failed *atomic.Int64, hs *hdrhistogram.Histogram) {
	tr.Connects, tr.Upgraded, tr.Failed = connects.Load(), upgraded.Load(), failed.Load()
	if tr.StormSecs > 0 {
		tr.PerSecond = round3(float64(tr.Connects) / tr.StormSecs)
	}
	tr.Handshake = latencyOf(hs)
}

func anyAddr[T any](addrs []T, k int) T {
	var zero T
	if len(addrs) == 0 {
		return zero
	}
	return addrs[k%len(addrs)]
}

func sleepOrStop(stop <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// timedPatch sends PATCH /api/v1/tokens/{id} with its own client, bounded
// by --admin-timeout, and returns the HTTP status (0: no answer) and the
// body of an error answer.
func (r *attackRun) timedPatch(ctx context.Context, id int64, body any) (int, string, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "PATCH", r.api.base+"/api/v1/tokens/"+strconv.FormatInt(id, 10), bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+r.api.key)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: r.o.AdminTimeout}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 && resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, "", nil
	}
	s := string(bytes.TrimSpace(raw))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return resp.StatusCode, s, nil
}

// countSessions returns how many sessions GET /api/v1/connections?token_id=
// lists for the token: an array, or a page object with a total (or an
// array of items).
func (r *attackRun) countSessions(ctx context.Context, id int64) (int, error) {
	req, err := newGet(ctx, r.api.base+"/api/v1/connections?token_id="+strconv.FormatInt(id, 10))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.api.key)
	resp, err := r.api.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("GET /api/v1/connections: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	return countListed(io.LimitReader(resp.Body, 1<<30))
}

// countListed counts the sessions of a connections answer without holding
// it whole: a JSON array, or an object with "total" (preferred) or an
// array member.
func countListed(rd io.Reader) (int, error) {
	dec := json.NewDecoder(rd)
	t, err := dec.Token()
	if err != nil {
		return 0, err
	}
	countArray := func() (int, error) {
		n := 0
		for dec.More() {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return n, err
			}
			n++
		}
		_, err := dec.Token() // ]
		return n, err
	}
	switch t {
	case json.Delim('['):
		return countArray()
	case json.Delim('{'):
		items, total := -1, -1
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return 0, err
			}
			key, _ := kt.(string)
			// Peek at the value: an array is counted, a number under
			// "total" taken, anything else skipped.
			vt, err := dec.Token()
			if err != nil {
				return 0, err
			}
			switch v := vt.(type) {
			case json.Delim:
				if v == '[' {
					n, err := countArray()
					if err != nil {
						return 0, err
					}
					if items < 0 {
						items = n
					}
				} else if err := skipValue(dec); err != nil {
					return 0, err
				}
			case float64:
				if key == "total" {
					total = int(v)
				}
			}
		}
		switch {
		case total >= 0:
			return total, nil
		case items >= 0:
			return items, nil
		}
		return 0, errors.New("connections answer: neither an array nor a total")
	}
	return 0, errors.New("connections answer: not JSON array or object")
}

// skipValue skips the rest of an object whose '{' was just read.
func skipValue(dec *json.Decoder) error {
	depth := 1
	for depth > 0 {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
	}
	return nil
}
