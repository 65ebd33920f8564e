package cluster

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// instrumented is a rueidis.Client that times every request/response call
// and counts its failures. Subscriptions (Receive) and the per-node clients
// of Nodes() are passed through unmeasured: a subscription's call lasts as
// long as the subscription.
type instrumented struct {
	rueidis.Client
	seconds prometheus.Observer
	errors  prometheus.Counter
}

// redisMetrics are the collectors of one instrumented client.
type redisMetrics struct {
	seconds prometheus.Histogram
	errors  prometheus.Counter
}

func newRedisMetrics(reg prometheus.Registerer) (*redisMetrics, error) {
	m := &redisMetrics{
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatecast_redis_request_seconds",
			Help:    "Round trip of each Redis call of this node (one command, or one pipelined batch).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_redis_errors_total",
			Help: "Redis commands of this node that failed (network, timeout, or an error reply; a nil reply is not an error).",
		}),
	}
	for _, c := range []prometheus.Collector{m.seconds, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *redisMetrics) wrap(c rueidis.Client) rueidis.Client {
	return &instrumented{Client: c, seconds: m.seconds, errors: m.errors}
}

func (c *instrumented) count(r rueidis.RedisResult) {
	if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
		c.errors.Inc()
	}
}

func (c *instrumented) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	start := time.Now()
	r := c.Client.Do(ctx, cmd)
	c.seconds.Observe(time.Since(start).Seconds())
	c.count(r)
	return r
}

func (c *instrumented) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	start := time.Now()
	rs := c.Client.DoMulti(ctx, cmds...)
	c.seconds.Observe(time.Since(start).Seconds())
	for _, r := range rs {
		c.count(r)
	}
	return rs
}

func (c *instrumented) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	start := time.Now()
	r := c.Client.DoCache(ctx, cmd, ttl)
	c.seconds.Observe(time.Since(start).Seconds())
	c.count(r)
	return r
}

func (c *instrumented) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	start := time.Now()
	rs := c.Client.DoMultiCache(ctx, multi...)
	c.seconds.Observe(time.Since(start).Seconds())
	for _, r := range rs {
		c.count(r)
	}
	return rs
}
