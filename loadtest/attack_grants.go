package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// GrantsReport is the grants scenario: a token with many grants, built
// through the admin API, publishing on a topic only its last grant covers.
type GrantsReport struct {
	Grants   int            `json:"grants"`
	Build    GrantBuild     `json:"build"`
	Topic    string         `json:"topic"`
	Publish  *PublishRun    `json:"publish,omitempty"`
	Baseline *PublishRun    `json:"baseline_one_grant,omitempty"`
	Cleanup  *GrantsCleanup `json:"cleanup,omitempty"`
}

// GrantBuild is the building of the grants: one POST /api/v1/tags and one
// PUT /api/v1/tokens/{id}/permissions/{tag} per grant.
type GrantBuild struct {
	Concurrency int `json:"concurrency"`
	// Connected: a session of the token was connected during the build
	// (--build-connected), so every PUT was enforced on it.
	Connected         bool      `json:"session_connected"`
	HeldSessionClosed int       `json:"held_session_close_code,omitempty"` // the broker closed it (it should not)
	Built             int       `json:"built"`
	Seconds           float64   `json:"seconds"`
	TagSeconds        float64   `json:"tag_posts_seconds"` // sum of the POSTs' times
	PutSeconds        float64   `json:"puts_seconds"`      // sum of the PUTs' times
	TagPost           Latency   `json:"tag_post_latency"`
	Put               Latency   `json:"put_latency"`
	PutMsByTenth      []float64 `json:"put_mean_ms_by_tenth"` // mean PUT time over each tenth of the build, in order: growth shows the cost per grant rising with the grants already held
}

// PublishRun is one publisher → one subscriber, at most Window messages in
// flight, for the run's duration.
type PublishRun struct {
	Grants         int     `json:"grants"`
	Window         int     `json:"window"`
	PublisherMs    float64 `json:"publisher_connect_ms"`
	SubscriberMs   float64 `json:"subscriber_connect_ms"`
	Seconds        float64 `json:"seconds"` // publishing
	Sent           int64   `json:"sent"`
	Delivered      int64   `json:"delivered"`
	SentPS         float64 `json:"sent_per_second"`
	DeliveredPS    float64 `json:"delivered_per_second"`      // msg/s: deliveries over the time from the first publish to the last delivery
	Stalled        bool    `json:"stalled,omitempty"`         // the window stayed full for 2 s with nothing delivered
	BrokerAccepted *int64  `json:"broker_accepted,omitempty"` // gatecast_messages_in_total over the run
	BrokerRejected *int64  `json:"broker_rejected,omitempty"` // gatecast_messages_rejected_total over the run
	ClosedCode     int     `json:"closed_code,omitempty"`     // a close frame on either connection
}

// GrantsCleanup is the deletion of the run's token and tags.
type GrantsCleanup struct {
	Deleted int     `json:"tags_deleted"`
	Seconds float64 `json:"seconds"`
}

func (r *attackRun) grants() error {
	o := r.o
	ctx := r.abortCtx
	gr := &GrantsReport{Grants: o.Grants, Build: GrantBuild{Concurrency: o.BuildConcurrency}}
	r.rep.Grants = gr
	prefix := "atkg-" + r.stamp
	tok, err := r.createToken(ctx, "grants")
	if err != nil {
		return err
	}
	tagIDs := make([]int64, o.Grants)
	var built atomic.Int64
	var lastPut atomic.Int64 // µs
	phase := atomic.Value{}
	phase.Store("build")
	var pubSent, pubDelivered atomic.Int64
	r.watch.setStatus(func(p *AttackPoint) string {
		if phase.Load() == "build" {
			return fmt.Sprintf("grants: built %d/%d (last PUT %.1f ms)", built.Load(), o.Grants, float64(lastPut.Load())/1000)
		}
		p.Sent, p.Delivered = pubSent.Load(), pubDelivered.Load()
		return fmt.Sprintf("grants %s: sent %d, delivered %d", phase.Load(), p.Sent, p.Delivered)
	})

	// Build: tag i is PREFIX/g<i>/#, granted readwrite.
	tagH, putH := newHist(), newHist()
	puts := make([]int64, o.Grants) // ns
	var tagNs, putNs atomic.Int64
	var mu sync.Mutex
	next := make(chan int)
	errc := make(chan error, o.BuildConcurrency)
	buildStart := time.Now()
	one := func(i int) error {
		t0 := time.Now()
		var t struct {
			ID int64 `json:"id"`
		}
		if err := r.api.do(ctx, "POST", "/api/v1/tags", map[string]any{"pattern": fmt.Sprintf("%s/g%d/#", prefix, i)}, &t); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		t1 := time.Now()
		tagIDs[i] = t.ID
		if err := r.api.do(ctx, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, t.ID), map[string]any{"permission": "readwrite"}, nil); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		t2 := time.Now()
		puts[i] = t2.Sub(t1).Nanoseconds()
		tagNs.Add(t1.Sub(t0).Nanoseconds())
		putNs.Add(puts[i])
		lastPut.Store(puts[i] / 1000)
		mu.Lock()
		recordUs(tagH, t1.Sub(t0).Nanoseconds())
		recordUs(putH, puts[i])
		mu.Unlock()
		built.Add(1)
		return nil
	}
	// Grant 0 first; with --build-connected a session of the token (on
	// grant 0's topics) stays connected while the others are added, as a
	// device would be online while its rights are edited: each change is
	// then enforced on a live session.
	buildErr := one(0)
	closeHolder := func() {}
	if buildErr == nil && o.BuildConnected {
		holder, err := dialRaw(ctx, r.target, nil, upgradeRequest(r.target, tok.Secret, prefix+"/g0/held"), o.DialTimeout)
		if err != nil {
			r.errs.add(upgradeError(err))
			return fmt.Errorf("grants: the session held during the build: %w", err)
		}
		holderEnd := make(chan readEnd, 1)
		go func() { holderEnd <- readFramesReplying(holder.r, holder.c, nil, nil) }()
		closeHolder = func() {
			_ = closeRST(holder.c)
			if e := <-holderEnd; e.closeCode != 0 {
				gr.Build.HeldSessionClosed = e.closeCode
			}
		}
		gr.Build.Connected = true
	}
	var wg sync.WaitGroup
	for range o.BuildConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := one(i); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
feed:
	for i := 1; i < o.Grants && buildErr == nil; i++ {
		select {
		case next <- i:
		case buildErr = <-errc:
			break feed
		case <-ctx.Done():
			buildErr = context.Cause(ctx)
			break feed
		}
	}
	close(next)
	wg.Wait()
	closeHolder()
	if buildErr == nil {
		select {
		case buildErr = <-errc:
		default:
		}
	}
	b := &gr.Build
	b.Built = int(built.Load())
	b.Seconds = round3(time.Since(buildStart).Seconds())
	b.TagSeconds = round3(float64(tagNs.Load()) / 1e9)
	b.PutSeconds = round3(float64(putNs.Load()) / 1e9)
	b.TagPost, b.Put = latencyOf(tagH), latencyOf(putH)
	b.PutMsByTenth = tenths(puts[:b.Built])
	defer r.cleanupGrants(gr, tok, tagIDs)
	if buildErr != nil {
		return fmt.Errorf("grants: building grant %d of %d: %w", b.Built+1, o.Grants, buildErr)
	}

	// Publish on a topic only the last grant covers.
	gr.Topic = fmt.Sprintf("%s/g%d/data", prefix, o.Grants-1)
	phase.Store("publish")
	gr.Publish, err = r.publishRun(ctx, tok.Secret, gr.Topic, o.Grants, &pubSent, &pubDelivered)
	if err != nil {
		return err
	}
	if o.Baseline {
		btok, err := r.createToken(ctx, "baseline")
		if err != nil {
			return err
		}
		if err := r.grant(ctx, btok, prefix+"-base/#", "readwrite"); err != nil {
			return err
		}
		phase.Store("baseline (1 grant)")
		pubSent.Store(0)
		pubDelivered.Store(0)
		if gr.Baseline, err = r.publishRun(ctx, btok.Secret, prefix+"-base/data", 1, &pubSent, &pubDelivered); err != nil {
			return err
		}
	}
	phase.Store("cleanup")
	return nil
}

// tenths returns the mean (ms) of each tenth of d (ns), in order.
func tenths(d []int64) []float64 {
	if len(d) == 0 {
		return nil
	}
	parts := min(10, len(d))
	out := make([]float64, parts)
	for p := range parts {
		lo, hi := len(d)*p/parts, len(d)*(p+1)/parts
		var sum int64
		for _, v := range d[lo:hi] {
			sum += v
		}
		out[p] = round3(float64(sum) / float64(hi-lo) / 1e6)
	}
	return out
}

// cleanupGrants deletes the token (its permissions go with it) and then,
// with --cleanup, the tags: a few calls in flight.
func (r *attackRun) cleanupGrants(gr *GrantsReport, tok ltToken, tagIDs []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if r.api.deleteToken(ctx, tok.ID) == nil {
		r.created = slices.DeleteFunc(r.created, func(id int64) bool { return id == tok.ID })
	}
	if !r.o.Cleanup {
		return
	}
	t0 := time.Now()
	ids := make(chan int64)
	var deleted atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				if r.api.do(ctx, "DELETE", fmt.Sprintf("/api/v1/tags/%d", id), nil, nil) == nil {
					deleted.Add(1)
				}
			}
		}()
	}
	for _, id := range tagIDs {
		if id != 0 && ctx.Err() == nil {
			ids <- id
		}
	}
	close(ids)
	wg.Wait()
	gr.Cleanup = &GrantsCleanup{Deleted: int(deleted.Load()), Seconds: round3(time.Since(t0).Seconds())}
}

// publishRun connects a subscriber and a publisher of topic with secret and
// publishes as fast as the broker delivers, at most Window in flight, for
// Duration.
func (r *attackRun) publishRun(ctx context.Context, secret, topic string, grants int, sent, delivered *atomic.Int64) (*PublishRun, error) {
	o := r.o
	pr := &PublishRun{Grants: grants, Window: o.Window}
	before, mErr := scrapeMetrics(ctx, r.api, "gatecast_messages_in_total", "gatecast_messages_rejected_total")
	req := upgradeRequest(r.target, secret, topic)
	t0 := time.Now()
	subc, err := dialRaw(ctx, r.target, nil, req, o.DialTimeout)
	if err != nil {
		r.errs.add(upgradeError(err))
		return pr, fmt.Errorf("grants: subscriber: %w", err)
	}
	defer subc.c.Close()
	pr.SubscriberMs = round3(float64(time.Since(t0).Microseconds()) / 1000)
	t0 = time.Now()
	pubc, err := dialRaw(ctx, r.target, nil, upgradeRequest(r.target, secret, topic), o.DialTimeout)
	if err != nil {
		r.errs.add(upgradeError(err))
		return pr, fmt.Errorf("grants: publisher: %w", err)
	}
	defer pubc.c.Close()
	pr.PublisherMs = round3(float64(time.Since(t0).Microseconds()) / 1000)

	credits := make(chan struct{}, o.Window)
	for range o.Window {
		credits <- struct{}{}
	}
	var lastDelivery atomic.Int64
	var closed atomic.Int32
	subDone := make(chan readEnd, 1)
	go func() {
		subDone <- readFramesReplying(subc.r, subc.c, func(op ws.OpCode) {
			if op != ws.OpText {
				return
			}
			delivered.Add(1)
			lastDelivery.Store(time.Now().UnixNano())
			select {
			case credits <- struct{}{}:
			default:
			}
		}, func(code int, _ string) { closed.CompareAndSwap(0, int32(code)) })
	}()
	pubDone := make(chan readEnd, 1)
	go func() {
		pubDone <- readFramesReplying(pubc.r, pubc.c, nil, func(code int, _ string) { closed.CompareAndSwap(0, int32(code)) })
	}()
	// Let the subscriptions settle before the first publish.
	time.Sleep(100 * time.Millisecond)

	const batch = 64
	payload := []byte(`{"tag":"` + topic + `","message":{"n":1}}`)
	buf := repeatFrames(ws.OpText, payload, batch*len(appendClientFrame(nil, ws.OpText, payload, [4]byte{})))
	frameLen := len(buf) / batch
	start := time.Now()
	end := start.Add(o.Duration)
	stall := time.NewTimer(time.Hour)
	defer stall.Stop()
	var writeErr error
publish:
	for time.Now().Before(end) && ctx.Err() == nil && closed.Load() == 0 {
		stall.Reset(min(2*time.Second, time.Until(end)+time.Millisecond))
		select {
		case <-credits:
		case <-stall.C:
			if time.Now().Before(end) {
				pr.Stalled = true
			}
			break publish
		case <-ctx.Done():
			break publish
		}
		k := 1
	more:
		for k < batch {
			select {
			case <-credits:
				k++
			default:
				break more
			}
		}
		_ = pubc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, writeErr = pubc.c.Write(buf[:k*frameLen]); writeErr != nil {
			break
		}
		sent.Add(int64(k))
	}
	pubEnd := time.Now()
	pr.Seconds = round3(pubEnd.Sub(start).Seconds())
	// Deliveries in flight: until all arrived or nothing came for 1 s.
	for last, lastChange := int64(-1), time.Now(); delivered.Load() < sent.Load() && time.Since(lastChange) < time.Second && ctx.Err() == nil; {
		if d := delivered.Load(); d != last {
			last, lastChange = d, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	pr.Sent, pr.Delivered = sent.Load(), delivered.Load()
	pr.ClosedCode = int(closed.Load())
	if pr.Seconds > 0 {
		pr.SentPS = round3(float64(pr.Sent) / pr.Seconds)
	}
	if ld := lastDelivery.Load(); ld > 0 {
		if d := time.Unix(0, ld).Sub(start).Seconds(); d > 0 {
			pr.DeliveredPS = round3(float64(pr.Delivered) / d)
		}
	}
	if after, err := scrapeMetrics(context.WithoutCancel(ctx), r.api, "gatecast_messages_in_total", "gatecast_messages_rejected_total"); err == nil && mErr == nil {
		if v, ok := after["gatecast_messages_in_total"]; ok {
			d := int64(v - before["gatecast_messages_in_total"])
			pr.BrokerAccepted = &d
		}
		if v, ok := after["gatecast_messages_rejected_total"]; ok {
			d := int64(v - before["gatecast_messages_rejected_total"])
			pr.BrokerRejected = &d
		}
	}
	// A polite goodbye on both connections, then wait briefly for the
	// readers.
	for _, c := range []net.Conn{pubc.c, subc.c} {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(closeFrame(ws.StatusNormalClosure))
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	<-subDone
	<-pubDone
	switch {
	case writeErr != nil:
		r.errs.add("write")
		return pr, fmt.Errorf("grants: publishing: %w", writeErr)
	case pr.ClosedCode != 0:
		return pr, fmt.Errorf("grants: the broker closed a connection with %d", pr.ClosedCode)
	case pr.Delivered == 0:
		return pr, errors.New("grants: nothing was delivered: is the topic authorized?")
	}
	return pr, nil
}
