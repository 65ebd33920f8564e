package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// `gatecast loadtest storm`: N devices, each with its own token, connect to
// the nodes of a cluster (--url a,b,c: round robin), then wait for the mass
// disconnect of the nodes restarting (done by loadtest/scripts/storm.sh, or
// a test) and reconnect at once (storm_worker.go), so that every node
// meets N/nodes tokens it has never seen, with cold caches. It reports the
// time until all are back, per-device reconnect latencies and attempts,
// and what the reconnects cost the shared stores: Redis calls per command
// (INFO commandstats) and Postgres transactions, tuples and statements
// (pg_stat_database, pg_stat_statements) per reconnect.
//
// Sequence: tokens (created through the admin API, or reused from
// --tokens-file) → connect all → (with --pg-dsn, --pg-stats-delay for the
// connect's Postgres counts to come in) → store snapshot S0 → --stats-baseline idle
// → arm the reconnects → snapshot S1 → "storm: ready" (stderr, and
// --ready-file) → the nodes restart → all back (or given up) → Redis
// snapshot S2 → --pg-stats-delay → Postgres snapshot S2. S0→S1 is the
// stores' background rate (heartbeats, leases), subtracted from S1→S2 in
// the "net" figures.

// StormOptions are the storm scenario's knobs (Options.Storm).
type StormOptions struct {
	TokensFile       string        // reuse (or save) the tokens here
	ReadyFile        string        // created once every device is connected and the reconnects are armed
	Timeout          time.Duration // per device: reconnect attempts stop this long after its drop (default 60s)
	Wait             time.Duration // longest wait for the drop after ready (default 5m)
	Quiet            time.Duration // with some devices never dropped: the storm is over once none is down and none dropped for this long (default 3s)
	Attempts         int           // reconnect attempts per device and drop (default 100)
	Jitter           time.Duration // first attempt delayed by a random [0, Jitter) (default 0: at once)
	Backoff          time.Duration // retry delay after a failed attempt, doubling, jittered [d/2, d) (default 50ms)
	BackoffMax       time.Duration // at most (default 1s)
	Concurrency      int           // reconnects in flight per worker (default 2000)
	AdminConcurrency int           // token creations (and deletions) in flight (default 32)
	TokenLimit       int           // max_connections of the created tokens (0: unlimited)
	RedisAddrs       string        // read INFO commandstats here (comma-separated)
	PGDSN            string        // read pg_stat_database / pg_stat_statements of this database
	PGStatsDelay     time.Duration // wait before the last Postgres snapshot: idle backends report their counts up to 10 s late (CLI default 11s)
	Baseline         time.Duration // idle window measuring the stores' background rate (default 2s; < 0: none)
	OnReady          func()        // called at ready (tests)
}

func (s StormOptions) withDefaults() StormOptions {
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defD(&s.Timeout, defStormTimeout)
	defD(&s.Wait, 5*time.Minute)
	defD(&s.Quiet, 3*time.Second)
	defD(&s.Backoff, defStormBackoff)
	defD(&s.BackoffMax, defStormBackoffMax)
	defD(&s.Baseline, 2*time.Second)
	if s.Attempts == 0 {
		s.Attempts = defStormAttempts
	}
	if s.Concurrency == 0 {
		s.Concurrency = defStormConc
	}
	if s.AdminConcurrency == 0 {
		s.AdminConcurrency = 32
	}
	return s
}

func (s StormOptions) validate() error {
	switch {
	case s.Timeout <= 0 || s.Wait <= 0 || s.Quiet <= 0 || s.Jitter < 0 || s.PGStatsDelay < 0:
		return errors.New("--storm-timeout, --storm-wait, --storm-quiet must be > 0, --storm-jitter and --pg-stats-delay ≥ 0")
	case s.Attempts < 1 || s.Attempts > 100000:
		return errors.New("--storm-attempts must be 1…100000")
	case s.Backoff <= 0 || s.BackoffMax < s.Backoff:
		return errors.New("--storm-backoff must be > 0 and ≤ --storm-backoff-max")
	case s.Concurrency < 1 || s.Concurrency > 20000:
		return errors.New("--storm-concurrency must be 1…20000")
	case s.AdminConcurrency < 1 || s.AdminConcurrency > 256:
		return errors.New("--admin-concurrency must be 1…256")
	case s.TokenLimit < 0:
		return errors.New("--token-limit must be ≥ 0")
	}
	for _, a := range splitURLs(s.RedisAddrs) {
		if _, err := parseRedisAddr(a); err != nil {
			return err
		}
	}
	return nil
}

// StormReport is the storm scenario's result.
type StormReport struct {
	Devices  int              `json:"devices"`
	Nodes    int              `json:"nodes"`
	Tokens   StormTokens      `json:"tokens"`
	Settings stormSettings    `json:"settings"`
	Dropped  int64            `json:"dropped"` // devices whose connection the broker ended
	Back     int64            `json:"back"`    // of those, reconnected and admitted
	Failed   int64            `json:"failed"`  // gave up (attempts or --storm-timeout)
	Drops    int64            `json:"drop_events"`
	Causes   map[string]int64 `json:"drop_causes"`
	// From the first drop to the last device back; from the first device
	// back (the nodes accept again) to the last; from the first drop to the
	// first device back (the nodes' downtime, as the fleet saw it).
	AllBackSinceDrop      float64 `json:"all_back_since_first_drop_seconds"`
	AllBackSinceFirstBack float64 `json:"all_back_since_first_reconnect_seconds"`
	Downtime              float64 `json:"first_drop_to_first_reconnect_seconds"`
	ReconnectsPerSecond   float64 `json:"reconnects_per_second"` // back / all_back_since_first_reconnect
	// Reconnect is per device: its first attempt after its node came back
	// (after the last attempt refused at the TCP level) → admitted.
	// SinceDrop: its drop → admitted.
	// Handshake: every successful attempt, dial → admitted.
	Reconnect Latency        `json:"reconnect_latency"`
	SinceDrop Latency        `json:"since_drop_latency"`
	Handshake Latency        `json:"handshake_latency"`
	Attempts  AttemptsReport `json:"attempts"`
	Redis     *StormRedis    `json:"redis,omitempty"`
	Postgres  *StormPG       `json:"postgres,omitempty"`
}

// StormTokens is how the devices' tokens came to be.
type StormTokens struct {
	Count     int     `json:"count"`
	Created   int     `json:"created"`
	Reused    int     `json:"reused"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"created_per_second,omitempty"`
	File      string  `json:"file,omitempty"`
	Kept      bool    `json:"kept"` // not deleted at the end (--tokens-file)
}

// AttemptsReport is reconnect attempts per device.
type AttemptsReport struct {
	Total int64   `json:"total"`
	Mean  float64 `json:"mean"`
	P50   int32   `json:"p50"`
	P99   int32   `json:"p99"`
	Max   int32   `json:"max"`
}

// StormRedis is Redis's calls between S1 and S2, the reader's own INFO
// left out.
type StormRedis struct {
	Addrs           []string       `json:"addrs"`
	WindowSeconds   float64        `json:"window_seconds"`   // S1 → S2
	BaselineSeconds float64        `json:"baseline_seconds"` // S0 → S1
	Calls           int64          `json:"calls"`
	Net             float64        `json:"net_calls"` // calls − baseline rate × window
	PerReconnect    float64        `json:"net_calls_per_reconnect"`
	Commands        []StormCommand `json:"commands"`
	Error           string         `json:"error,omitempty"`
}

// StormCommand is one Redis command's calls in the storm window.
type StormCommand struct {
	Command      string  `json:"command"`
	Calls        int64   `json:"calls"`
	BaselinePS   float64 `json:"baseline_per_second"`
	Net          float64 `json:"net"`
	PerReconnect float64 `json:"net_per_reconnect"`
}

// StormPG is Postgres's counts of the store's database between S1 and S2,
// the reader's own transactions left out.
type StormPG struct {
	WindowSeconds   float64 `json:"window_seconds"`
	BaselineSeconds float64 `json:"baseline_seconds"`
	DelaySeconds    float64 `json:"delay_seconds"` // --pg-stats-delay before S2
	XactCommit      int64   `json:"xact_commit"`
	XactRollback    int64   `json:"xact_rollback"`
	TupFetched      int64   `json:"tup_fetched"`
	TupReturned     int64   `json:"tup_returned"`
	// Net: minus the baseline rate over the window; per reconnect.
	XactPerReconnect       float64 `json:"net_xact_per_reconnect"`
	TupFetchedPerReconnect float64 `json:"net_tup_fetched_per_reconnect"`
	// pg_stat_statements: executions of the database's statements (nil
	// when unavailable, with the reason).
	Statements             *int64           `json:"statements,omitempty"`
	StatementsPerReconnect *float64         `json:"net_statements_per_reconnect,omitempty"`
	StatementsUnavailable  string           `json:"statements_unavailable,omitempty"`
	Top                    []StatementCount `json:"top_statements,omitempty"`
	Error                  string           `json:"error,omitempty"`
}

// stormRun is the storm's state in the parent.
type stormRun struct {
	deleteTokens bool
	redis        []redisTarget
	pg           *pgReader
	pgErr        error
}

// stormTopic is the tag pattern every storm token reads: device i
// subscribes to lt-storm/<i>.
const (
	stormTopic   = "lt-storm"
	stormPattern = stormTopic + "/#"
)

// tokensFile is --tokens-file.
type tokensFile struct {
	Pattern string    `json:"pattern"`
	TagID   int64     `json:"tag_id"`
	Tokens  []ltToken `json:"tokens"`
}

func (r *run) startStorm(ctx context.Context) error {
	o := r.o
	sr := &stormRun{deleteTokens: o.Storm.TokensFile == ""}
	r.storm = sr
	for _, a := range splitURLs(o.Storm.RedisAddrs) {
		t, err := parseRedisAddr(a)
		if err != nil {
			return err
		}
		sr.redis = append(sr.redis, t)
	}
	if o.Storm.PGDSN != "" {
		sr.pg, sr.pgErr = newPGReader(ctx, o.Storm.PGDSN)
		if sr.pgErr != nil {
			return fmt.Errorf("--pg-dsn: %w", sr.pgErr)
		}
	}
	rep := &StormReport{Devices: o.Conns, Nodes: len(r.deviceURLs()),
		Settings: stormSettings{Attempts: o.Storm.Attempts, Timeout: o.Storm.Timeout, Jitter: o.Storm.Jitter, Backoff: o.Storm.Backoff, BackoffMax: o.Storm.BackoffMax, Concurrency: o.Storm.Concurrency}}
	r.rep.Storm = rep
	t0 := time.Now()
	tokens, created, err := r.stormTokens(ctx)
	rep.Tokens = StormTokens{Count: len(tokens), Created: created, Reused: len(tokens) - created, Seconds: time.Since(t0).Seconds(),
		File: o.Storm.TokensFile, Kept: !sr.deleteTokens}
	if created > 0 && rep.Tokens.Seconds > 0 {
		rep.Tokens.PerSecond = float64(created) / rep.Tokens.Seconds
	}
	if err != nil {
		return err
	}
	secrets := make([]string, len(tokens))
	for i, t := range tokens {
		secrets[i] = t.Secret
	}
	return r.launch(ctx, secrets, "", "", func(sp *workerSpec) {
		sp.Layout, sp.TopicBase = layoutStorm, stormTopic
		sp.ConfirmPing = o.Protocol != protoMQTT
	})
}

// stormTokens returns o.Conns tokens: reused from --tokens-file when it
// holds enough that still exist, the rest created (and the file written).
func (r *run) stormTokens(ctx context.Context) ([]ltToken, int, error) {
	o := r.o
	n := o.Conns
	var tf tokensFile
	if path := o.Storm.TokensFile; path != "" {
		if b, err := os.ReadFile(path); err == nil {
			if err := json.Unmarshal(b, &tf); err != nil {
				return nil, 0, fmt.Errorf("--tokens-file %s: %w", path, err)
			}
			if !r.tokensStillThere(ctx, tf) {
				fmt.Fprintf(r.stderr(), "storm: the tokens of %s are not on this broker: creating new ones\n", path)
				tf = tokensFile{}
			}
		} else if !os.IsNotExist(err) {
			return nil, 0, err
		}
	}
	if len(tf.Tokens) >= n {
		return tf.Tokens[:n], 0, nil
	}
	tag, err := r.api.tagID(ctx, stormPattern)
	if err != nil {
		return nil, 0, fmt.Errorf("admin API: %w", err)
	}
	tf.Pattern, tf.TagID = stormPattern, tag
	have := len(tf.Tokens)
	fresh, err := r.createStormTokens(ctx, have, n-have, tag)
	if o.Storm.TokensFile == "" {
		for _, t := range fresh {
			if t.ID != 0 {
				r.created = append(r.created, t.ID)
			}
		}
	}
	if err != nil {
		return nil, len(fresh), err
	}
	tf.Tokens = append(tf.Tokens, fresh...)
	if path := o.Storm.TokensFile; path != "" {
		if err := writeTokensFile(path, tf); err != nil {
			return nil, len(fresh), err
		}
	}
	return tf.Tokens[:n], len(fresh), nil
}

// tokensStillThere checks the first and last token of a tokens file, and
// its tag, on the broker.
func (r *run) tokensStillThere(ctx context.Context, tf tokensFile) bool {
	if len(tf.Tokens) == 0 || tf.Pattern != stormPattern {
		return false
	}
	var tag struct {
		Pattern string `json:"pattern"`
	}
	if err := r.api.do(ctx, "GET", fmt.Sprintf("/api/v1/tags/%d", tf.TagID), nil, &tag); err != nil || tag.Pattern != stormPattern {
		return false
	}
	for _, t := range []ltToken{tf.Tokens[0], tf.Tokens[len(tf.Tokens)-1]} {
		if err := r.api.do(ctx, "GET", fmt.Sprintf("/api/v1/tokens/%d", t.ID), nil, nil); err != nil {
			return false
		}
	}
	return true
}

func writeTokensFile(path string, tf tokensFile) error {
	b, err := json.Marshal(tf)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tokens-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path) // CreateTemp made it 0600: the file holds secrets
}

// createStormTokens creates count tokens (names from index from on), each
// with read on tag, AdminConcurrency at a time, spread over the admin
// URLs. A call refused with 503 (the write lock was busy) is retried.
func (r *run) createStormTokens(ctx context.Context, from, count int, tag int64) ([]ltToken, error) {
	o := r.o
	apis := make([]*adminAPI, 0, 3)
	for _, u := range splitURLs(o.AdminURL) {
		apis = append(apis, newAdminAPI(u, o.AdminKey))
	}
	out := make([]ltToken, count)
	stamp := strconv.FormatInt(r.epoch.Unix(), 10)
	var done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	jobs := make(chan int)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := range min(o.Storm.AdminConcurrency, max(count, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := apis[w%len(apis)]
			for k := range jobs {
				name := "loadtest-storm-" + stamp + "-" + strconv.Itoa(from+k)
				var t ltToken
				err := retry503(ctx, func() error {
					return a.do(ctx, "POST", "/api/v1/tokens", map[string]any{"name": name, "max_connections": o.Storm.TokenLimit}, &t)
				})
				if err == nil {
					out[k] = t
					err = retry503(ctx, func() error {
						return a.do(ctx, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", t.ID, tag), map[string]any{"permission": "read"}, nil)
					})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("creating storm token %d: %w", from+k, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				done.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(r.stderr(), "storm: tokens %d/%d (%.0f/s)\n", d, count, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
feed:
	for k := range count {
		select {
		case jobs <- k:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(stop)
	<-progressDone
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		// The ones made so far, for the cleanup.
		var made []ltToken
		for _, t := range out {
			if t.ID != 0 {
				made = append(made, t)
			}
		}
		return made, firstErr
	}
	return out, nil
}

// retry503 calls f again (up to 5 times, 100 ms apart) while it fails with
// HTTP 503: the admin API's write lock was taken.
func retry503(ctx context.Context, f func() error) error {
	var err error
	for range 5 {
		if err = f(); err == nil || !containsStatus(err, 503) {
			return err
		}
		if serr := sleep(ctx, 100*time.Millisecond); serr != nil {
			return err
		}
	}
	return err
}

// containsStatus reports whether err is an adminAPI.do error for HTTP code.
func containsStatus(err error, code int) bool {
	return err != nil && strings.Contains(err.Error(), ": HTTP "+strconv.Itoa(code)+":")
}

func (r *run) stderr() io.Writer {
	if r.o.Stderr != nil {
		return r.o.Stderr
	}
	return io.Discard
}

// storeSnapshot is one reading of both stores.
type storeSnapshot struct {
	at        time.Time
	redis     map[string]int64
	redisErr  error
	pg        pgCounts
	pgErr     error
	pgTakenAt time.Time
}

func (r *run) snapshotRedis(ctx context.Context, s *storeSnapshot) {
	if len(r.storm.redis) > 0 {
		s.redis, s.redisErr = redisSnapshot(ctx, r.storm.redis)
	}
}

func (r *run) snapshotPG(ctx context.Context, s *storeSnapshot) {
	if r.storm.pg != nil {
		s.pgTakenAt = time.Now()
		s.pg, s.pgErr = r.storm.pg.snapshot(ctx)
	}
}

func (r *run) stormScenario(ctx context.Context) error {
	o, rep := r.o, r.rep.Storm
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	var s0, s1, s2 storeSnapshot
	if r.storm.pg != nil {
		// pg_stat_database: the backends that served the connect report
		// their counts up to 10 s after they went idle; they must be in
		// before S0, not in the storm's window.
		if err := sleep(ctx, o.Storm.PGStatsDelay); err != nil {
			return err
		}
	}
	s0.at = time.Now()
	r.snapshotRedis(ctx, &s0)
	r.snapshotPG(ctx, &s0)
	if o.Storm.Baseline > 0 {
		if err := sleep(ctx, o.Storm.Baseline); err != nil {
			return err
		}
	}
	set := rep.Settings
	if _, err := r.fl.all(ctx, command{Op: "stormarm", Storm: &set}); err != nil {
		return err
	}
	s1.at = time.Now()
	r.snapshotRedis(ctx, &s1)
	r.snapshotPG(ctx, &s1)
	fmt.Fprintf(r.stderr(), "storm: ready (%d devices connected over %d nodes; restart the nodes now)\n", o.Conns, rep.Nodes)
	if o.Storm.ReadyFile != "" {
		if err := os.WriteFile(o.Storm.ReadyFile, []byte("ready\n"), 0o644); err != nil {
			return err
		}
	}
	if o.Storm.OnReady != nil {
		o.Storm.OnReady()
	}
	waitErr := r.stormWait(ctx)
	s2.at = time.Now()
	r.snapshotRedis(ctx, &s2)
	st, err := r.fl.all(ctx, command{Op: "stormtimes"})
	if err != nil {
		return err
	}
	if _, err := r.fl.all(ctx, command{Op: "stormstop"}); err != nil {
		return err
	}
	r.stormOutcome(st)
	if r.storm.pg != nil && waitErr == nil {
		if err := sleep(ctx, o.Storm.PGStatsDelay); err != nil {
			return err
		}
	}
	r.snapshotPG(ctx, &s2)
	r.stormStores(s0, s1, s2)
	if waitErr != nil {
		return waitErr
	}
	if rep.Back < rep.Dropped {
		return fmt.Errorf("storm: only %d of %d dropped devices are back (%d gave up)", rep.Back, rep.Dropped, rep.Failed)
	}
	return nil
}

// stormWait waits for the drop, then until every dropped device is back
// or has given up.
func (r *run) stormWait(ctx context.Context) error {
	o := r.o
	n := int64(o.Conns)
	readyAt := time.Now()
	var lastDrops int64
	lastChange := readyAt
	var firstDrop time.Time
	nextLine := readyAt.Add(time.Second)
	for {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return err
		}
		var agg stormStatus
		for _, s := range st {
			if s.Storm == nil {
				continue
			}
			agg.Dropped += s.Storm.Dropped
			agg.Down += s.Storm.Down
			agg.Back += s.Storm.Back
			agg.Failed += s.Storm.Failed
			agg.Drops += s.Storm.Drops
		}
		now := time.Now()
		if agg.Drops != lastDrops {
			lastDrops, lastChange = agg.Drops, now
		}
		if agg.Dropped > 0 && firstDrop.IsZero() {
			firstDrop = now
		}
		switch {
		case agg.Dropped == 0 && now.Sub(readyAt) > o.Storm.Wait:
			return fmt.Errorf("storm: no device was dropped within --storm-wait %s of ready", o.Storm.Wait)
		case agg.Dropped > 0 && agg.Down == 0 && (agg.Dropped == n || now.Sub(lastChange) > o.Storm.Quiet):
			return nil
		case agg.Dropped > 0 && now.Sub(firstDrop) > o.Storm.Timeout+10*time.Second:
			return fmt.Errorf("storm: %d devices still down %s after the first drop", agg.Down, o.Storm.Timeout+10*time.Second)
		}
		if now.After(nextLine) {
			nextLine = nextLine.Add(time.Second)
			fmt.Fprintf(r.stderr(), "storm: dropped %d, down %d, back %d, gave up %d\n", agg.Dropped, agg.Down, agg.Back, agg.Failed)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// stormOutcome computes the storm's figures from the workers' per-device
// times.
func (r *run) stormOutcome(st []status) {
	rep := r.rep.Storm
	rep.Causes = map[string]int64{}
	var sinceDrop, reconnect []int64
	var attempts []int32
	var firstDrop, firstBack, lastBack int64
	hs := newHist()
	for _, s := range st {
		ss := s.Storm
		if ss == nil {
			continue
		}
		rep.Dropped += ss.Dropped
		rep.Back += ss.Back
		rep.Failed += ss.Failed
		rep.Drops += ss.Drops
		for k, v := range ss.Causes {
			rep.Causes[k] += v
		}
		if ss.Handshake != "" {
			if h, err := decodeHist(ss.Handshake); err == nil {
				hs.Merge(h)
			}
		}
		for i, drop := range ss.DropAt {
			if drop == 0 {
				continue
			}
			if firstDrop == 0 || drop < firstDrop {
				firstDrop = drop
			}
			attempts = append(attempts, ss.Attempts[i])
			back := ss.BackAt[i]
			if back == 0 {
				continue
			}
			sinceDrop = append(sinceDrop, back-drop)
			if up := ss.UpAt[i]; up > 0 && up <= back {
				reconnect = append(reconnect, back-up)
			}
			if firstBack == 0 || back < firstBack {
				firstBack = back
			}
			lastBack = max(lastBack, back)
		}
	}
	rep.SinceDrop = exactLatency(sinceDrop)
	rep.Reconnect = exactLatency(reconnect)
	rep.Handshake = latencyOf(hs)
	if lastBack > 0 {
		rep.AllBackSinceDrop = float64(lastBack-firstDrop) / 1e9
		rep.AllBackSinceFirstBack = float64(lastBack-firstBack) / 1e9
		rep.Downtime = float64(firstBack-firstDrop) / 1e9
		if rep.AllBackSinceFirstBack > 0 {
			rep.ReconnectsPerSecond = float64(rep.Back) / rep.AllBackSinceFirstBack
		}
	}
	if len(attempts) > 0 {
		slices.Sort(attempts)
		a := &rep.Attempts
		for _, v := range attempts {
			a.Total += int64(v)
		}
		a.Mean = float64(a.Total) / float64(len(attempts))
		a.P50 = attempts[(len(attempts)-1)/2]
		a.P99 = attempts[min(len(attempts)-1, (len(attempts)*99+99)/100-1)]
		a.Max = attempts[len(attempts)-1]
	}
}

// stormStores fills the Redis and Postgres figures from the snapshots.
func (r *run) stormStores(s0, s1, s2 storeSnapshot) {
	rep := r.rep.Storm
	back := float64(rep.Back)
	per := func(v float64) float64 {
		if back == 0 {
			return 0
		}
		return v / back
	}
	if sr := r.storm; len(sr.redis) > 0 {
		rr := &StormRedis{WindowSeconds: s2.at.Sub(s1.at).Seconds(), BaselineSeconds: s1.at.Sub(s0.at).Seconds()}
		for _, t := range sr.redis {
			rr.Addrs = append(rr.Addrs, t.addr)
		}
		rep.Redis = rr
		switch {
		case s0.redisErr != nil:
			rr.Error = s0.redisErr.Error()
		case s1.redisErr != nil:
			rr.Error = s1.redisErr.Error()
		case s2.redisErr != nil:
			rr.Error = s2.redisErr.Error()
		default:
			base := redisDelta(s0.redis, s1.redis, sr.redis)
			win := redisDelta(s1.redis, s2.redis, sr.redis)
			for cmd, calls := range win {
				bps := 0.0
				if rr.BaselineSeconds > 0 {
					bps = float64(base[cmd]) / rr.BaselineSeconds
				}
				net := max(0, float64(calls)-bps*rr.WindowSeconds)
				rr.Commands = append(rr.Commands, StormCommand{Command: cmd, Calls: calls, BaselinePS: round3(bps), Net: round3(net), PerReconnect: round3(per(net))})
				rr.Calls += calls
				rr.Net += net
			}
			sort.Slice(rr.Commands, func(i, j int) bool {
				if rr.Commands[i].Calls != rr.Commands[j].Calls {
					return rr.Commands[i].Calls > rr.Commands[j].Calls
				}
				return rr.Commands[i].Command < rr.Commands[j].Command
			})
			rr.Net = round3(rr.Net)
			rr.PerReconnect = round3(per(rr.Net))
		}
	}
	if pr := r.storm.pg; pr != nil {
		pg := &StormPG{WindowSeconds: s2.pgTakenAt.Sub(s1.pgTakenAt).Seconds(), BaselineSeconds: s1.pgTakenAt.Sub(s0.pgTakenAt).Seconds(),
			DelaySeconds: r.o.Storm.PGStatsDelay.Seconds(), StatementsUnavailable: pr.unavailable}
		rep.Postgres = pg
		switch {
		case s0.pgErr != nil:
			pg.Error = s0.pgErr.Error()
		case s1.pgErr != nil:
			pg.Error = s1.pgErr.Error()
		case s2.pgErr != nil:
			pg.Error = s2.pgErr.Error()
		default:
			base := pr.delta(s0.pg, s1.pg, 0)
			win := pr.delta(s1.pg, s2.pg, 10)
			pg.XactCommit, pg.XactRollback, pg.TupFetched, pg.TupReturned = win.XactCommit, win.XactRollback, win.TupFetched, win.TupReturned
			scale := 0.0
			if pg.BaselineSeconds > 0 {
				scale = pg.WindowSeconds / pg.BaselineSeconds
			}
			net := func(w, b int64) float64 { return max(0, float64(w)-float64(b)*scale) }
			pg.XactPerReconnect = round3(per(net(win.XactCommit+win.XactRollback, base.XactCommit+base.XactRollback)))
			pg.TupFetchedPerReconnect = round3(per(net(win.TupFetched, base.TupFetched)))
			if win.Statements >= 0 && base.Statements >= 0 {
				n := win.Statements
				pg.Statements = &n
				v := round3(per(net(win.Statements, base.Statements)))
				pg.StatementsPerReconnect = &v
				pg.Top = win.Top
			}
		}
	}
}

// writeStormTable prints the storm's figures for people.
func writeStormTable(w io.Writer, rep *Report) {
	s := rep.Storm
	if s == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	row := func(k string, v ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprint(v...)) }
	fmt.Fprintf(tw, "\n== gatecast loadtest storm — %s, %.1f s\n", rep.Started.Format("2006-01-02 15:04:05Z"), rep.Seconds)
	tok := fmt.Sprintf("%d (%d created in %.1f s", s.Tokens.Count, s.Tokens.Created, s.Tokens.Seconds)
	if s.Tokens.Created > 0 {
		tok += fmt.Sprintf(", %.0f/s", s.Tokens.PerSecond)
	}
	tok += fmt.Sprintf(", %d reused)", s.Tokens.Reused)
	row("devices / nodes", fmt.Sprintf("%d over %d nodes, one token each: %s", s.Devices, s.Nodes, tok))
	row("dropped / back / gave up", fmt.Sprintf("%d / %d / %d  (drop events %d: %s)", s.Dropped, s.Back, s.Failed, s.Drops, formatCounts(s.Causes)))
	row("all back", fmt.Sprintf("%.3f s after the first drop, %.3f s after the first reconnect (downtime seen %.3f s; %.0f reconnects/s)",
		s.AllBackSinceDrop, s.AllBackSinceFirstBack, s.Downtime, s.ReconnectsPerSecond))
	lat := func(l Latency) string {
		return fmt.Sprintf("p50 %.1f  p90 %.1f  p99 %.1f  max %.1f ms (n %d)", l.P50, l.P90, l.P99, l.Max, l.Count)
	}
	row("reconnect (node up → admitted)", lat(s.Reconnect))
	row("drop → admitted", lat(s.SinceDrop))
	row("successful attempt (dial → admitted)", lat(s.Handshake))
	row("attempts per device", fmt.Sprintf("mean %.1f  p50 %d  p99 %d  max %d", s.Attempts.Mean, s.Attempts.P50, s.Attempts.P99, s.Attempts.Max))
	if rs := s.Redis; rs != nil {
		if rs.Error != "" {
			row("redis", "ERROR "+rs.Error)
		} else {
			row("redis calls", fmt.Sprintf("%d in %.1f s (net of background %.0f): %.2f per reconnect", rs.Calls, rs.WindowSeconds, rs.Net, rs.PerReconnect))
			for i, c := range rs.Commands {
				if i == 12 {
					break
				}
				row("  "+c.Command, fmt.Sprintf("%d  (%.2f per reconnect; background %.1f/s)", c.Calls, c.PerReconnect, c.BaselinePS))
			}
		}
	}
	if pg := s.Postgres; pg != nil {
		if pg.Error != "" {
			row("postgres", "ERROR "+pg.Error)
		} else {
			row("postgres transactions", fmt.Sprintf("%d commits, %d rollbacks: %.2f per reconnect (net; window %.1f s incl. %.0f s stats delay)", pg.XactCommit, pg.XactRollback, pg.XactPerReconnect, pg.WindowSeconds, pg.DelaySeconds))
			row("postgres tuples fetched", fmt.Sprintf("%d: %.2f per reconnect", pg.TupFetched, pg.TupFetchedPerReconnect))
			if pg.Statements != nil {
				row("postgres statements", fmt.Sprintf("%d: %.2f per reconnect (pg_stat_statements)", *pg.Statements, *pg.StatementsPerReconnect))
				for _, t := range pg.Top {
					row(fmt.Sprintf("  %d×", t.Calls), t.Query)
				}
			} else {
				row("postgres statements", "unavailable: "+pg.StatementsUnavailable)
			}
		}
	}
	if rep.ErrorsTotal > 0 {
		row("failed attempts", formatCounts(rep.Errors))
	}
}
