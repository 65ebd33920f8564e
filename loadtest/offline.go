package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// offlineScenario (MQTT only): the devices connect with persistent
// sessions (MQTT 5 Session Expiry Interval, 3.1.1 Clean Session 0) and
// subscribe to their command topic at QoS 1; they all drop at once (TCP
// reset); once the broker counts their sessions offline, the backend (the
// commander, an MQTT client) publishes one QoS 1 command to each device's
// own topic and waits for every PUBACK; then the devices reconnect
// (jittered, with backoff), resume their sessions (no SUBSCRIBE: Session
// Present 1 says the subscriptions are there) and get the queued command.
// It reports the reconnect times, Session Present, commands delivered,
// duplicates and missing, the time from each device's reconnect (its dial)
// to its command, and the broker's memory at each step from its /metrics.
func (r *run) offlineScenario(ctx context.Context) error {
	o := r.o
	off := &OfflineReport{Devices: int64(r.shape.devices), JitterSeconds: o.ReconnectJitter.Seconds()}
	if o.MQTTVersion == 5 {
		off.SessionExpirySeconds = int(o.SessionExpiry / time.Second)
	}
	r.rep.Offline = off
	mem := &off.Broker
	before, err := r.settledMemory(ctx)
	if err != nil {
		return err
	}
	mem.RSSBefore, mem.HeapBefore = before.RSS, before.HeapInuse+before.StackInuse
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	online, err := r.settledMemory(ctx)
	if err != nil {
		return err
	}
	mem.RSSOnline, mem.HeapOnline = online.RSS, online.HeapInuse+online.StackInuse

	// Every device drops (the commander stays).
	dropAt := time.Now()
	st, err := r.fl.all(ctx, command{Op: "outage", Fraction: 1})
	if err != nil {
		return err
	}
	for _, s := range st {
		off.Dropped += s.Dropped
	}
	// Publish only once the broker has noticed: a command sent to a
	// session whose dead connection is still attached would be in flight
	// (and resent with DUP), not queued.
	deadline := time.Now().Add(o.CloseTimeout)
	for {
		m, err := r.api.scrape(ctx)
		if err != nil {
			return err
		}
		off.OfflineSessions = m.OfflineSessions - before.OfflineSessions
		if off.OfflineSessions >= float64(off.Dropped) || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	off.OfflineSeconds = time.Since(dropAt).Seconds()

	// The backend: one QoS 1 command per device, to its own topic.
	pubStart := time.Now()
	if _, err := r.fl.all(ctx, command{Op: "traffic", Commands: true, CommandRate: o.Rate, CommandMax: int64(r.shape.devices)}); err != nil {
		return err
	}
	deadline = time.Now().Add(o.Drain + 30*time.Second)
	for {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return err
		}
		busy := false
		off.CommandsSent, off.CommandsAcked = 0, 0
		for _, s := range st {
			busy = busy || s.Publishing
			off.CommandsSent += s.Sent[kindCommand]
			off.CommandsAcked += s.PubAcks
		}
		if !busy && off.CommandsAcked >= off.CommandsSent || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	pubEnd := time.Now()
	off.PublishSeconds = pubEnd.Sub(pubStart).Seconds()
	if _, err := r.fl.all(ctx, command{Op: "quiesce"}); err != nil {
		return err
	}
	offline, err := r.settledMemory(ctx)
	if err != nil {
		return err
	}
	mem.RSSOffline, mem.HeapOffline = offline.RSS, offline.HeapInuse+offline.StackInuse
	if off.Devices > 0 {
		mem.OfflinePerConn = (mem.HeapOffline - mem.HeapBefore) / float64(off.Devices)
	}
	if off.CommandsAcked < off.CommandsSent {
		return fmt.Errorf("offline: the broker acknowledged %d of %d commands", off.CommandsAcked, off.CommandsSent)
	}
	if err := sleep(ctx, time.Until(dropAt.Add(o.Outage))); err != nil {
		return err
	}

	// The devices come back.
	stormAt := time.Now()
	st, err = r.fl.all(ctx, command{Op: "reconnect", Jitter: o.ReconnectJitter, Deadline: stormAt.Add(o.ReconnectDeadline).UnixNano()})
	if err != nil {
		return err
	}
	var last int64
	for _, s := range st {
		off.Reconnected += s.Connected
		off.ReconnectFailed += s.Failed
		off.SessionPresent += s.SessionPresent
		r.sessionPresent += s.SessionPresent
		last = max(last, s.LastConnect)
	}
	if last > 0 {
		off.ReconnectSeconds = float64(last-stormAt.UnixNano()) / 1e9
	}
	st, lastDelivery, err := r.drain(ctx)
	if err != nil {
		return err
	}
	if st, err = r.fl.all(ctx, command{Op: "histograms"}); err != nil {
		return err
	}
	dials, resume := newHist(), newHist()
	var delivered int64
	for _, s := range st {
		for _, m := range [...]struct {
			enc string
			h   *hdrhistogram.Histogram
		}{{s.DialHist, dials}, {s.ResumeHist, resume}} {
			if m.enc == "" {
				continue
			}
			h, err := decodeHist(m.enc)
			if err != nil {
				return err
			}
			m.h.Merge(h)
		}
		off.Delivered += s.CommandsUnique
		off.Duplicates += s.CommandsRepeats
		off.DupFlag += s.DupFlags
		delivered += s.Delivered[kindCommand]
	}
	off.ReconnectLatency, off.ReconnectToCommand = latencyOf(dials), latencyOf(resume)
	off.Missing = off.Devices - off.Delivered
	if delivered > 0 {
		off.AllDeliveredSeconds = lastDelivery.Sub(stormAt).Seconds()
	}
	after, err := r.settledMemory(ctx)
	if err != nil {
		return err
	}
	mem.RSSAfter, mem.HeapAfter = after.RSS, after.HeapInuse+after.StackInuse
	// Expected deliveries are one per command; a resent command counts
	// again, so the exact figures are the offline report's.
	r.trafficReports(st, pubStart, pubEnd, lastDelivery, false, true, [nKinds]bool{false, false}, [nKinds]float64{0, o.Rate})
	return nil
}

// settledMemory reads the broker's memory after two forced collections a
// moment apart: connections that just closed are freed by finalizers,
// which the first collection only queues.
func (r *run) settledMemory(ctx context.Context) (memory, error) {
	if _, err := r.api.memory(ctx); err != nil {
		return memory{}, err
	}
	if err := sleep(ctx, 100*time.Millisecond); err != nil {
		return memory{}, err
	}
	return r.api.memory(ctx)
}
