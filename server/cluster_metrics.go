package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clusterMetrics are the cluster mode's own series. Counters of the
// routing layer are read from its Stats at scrape time, so forwarding
// costs nothing extra on the publish path.
type clusterMetrics struct {
	barrier *prometheus.HistogramVec
	pending prometheus.Observer // bound child: outcome="pending"
	done    prometheus.Observer // bound child: outcome="confirmed"
}

func (c *clusterNode) registerMetrics(reg prometheus.Registerer) error {
	stat := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	barrier := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gatecast_revocation_barrier_seconds",
		Help:    "Time from an admin rights change to every live node's confirmation (or the end of --revocation-wait), by outcome.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"outcome"})
	c.metrics = &clusterMetrics{barrier: barrier, done: barrier.WithLabelValues("confirmed"), pending: barrier.WithLabelValues("pending")}
	cs := []prometheus.Collector{
		barrier,
		stat("gatecast_cluster_forwarded_total", "Messages sent to other nodes (one per matching node per publish).", func() uint64 { return c.routes.Stats().Sent }),
		stat("gatecast_cluster_received_total", "Messages received from other nodes and delivered locally.", func() uint64 { return c.routes.Stats().Delivered }),
		stat("gatecast_cluster_received_dropped_total", "Undecodable messages received from other nodes.", func() uint64 { return c.routes.Stats().Dropped }),
		stat("gatecast_cluster_route_resyncs_total", "Full reloads of the cluster route table.", func() uint64 { return c.routes.Stats().Resyncs }),
		stat("gatecast_cluster_forward_batches_total", "SPUBLISH commands sent to other nodes (each carries one or more messages).", func() uint64 { return c.routes.Stats().Batches }),
		stat("gatecast_cluster_forward_queue_dropped_total", "Messages not forwarded to a node because its peer queue was full.", func() uint64 { return c.routes.Stats().QueueDropped }),
		stat("gatecast_cluster_forward_send_errors_total", "SPUBLISH commands to other nodes that failed (their batch is dropped).", func() uint64 { return c.routes.Stats().SendErrors }),
		stat("gatecast_cluster_forward_lost_total", "Queued messages dropped because the SPUBLISH carrying them failed or was cut short.", func() uint64 { return c.routes.Stats().Lost }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gatecast_cluster_forward_queue_bytes", Help: "Bytes queued or in flight to other nodes."},
			func() float64 { return float64(c.routes.Stats().QueueBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gatecast_cluster_forward_backlogged_peers", Help: "Peer queues past their soft limit (publishers forwarding to them are slowed)."},
			func() float64 { return float64(c.routes.Stats().Backlogged) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gatecast_cluster_redis_up",
			Help: "1 while Redis answered within --revocation-staleness (the node admits connections), else 0."},
			func() float64 {
				if c.available() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gatecast_cluster_nodes", Help: "Live nodes seen at the last heartbeat."},
			func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(len(c.seen)) }),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}

func (m *clusterMetrics) observeBarrier(start time.Time, pending bool) {
	if m == nil {
		return
	}
	if pending {
		m.pending.Observe(time.Since(start).Seconds())
	} else {
		m.done.Observe(time.Since(start).Seconds())
	}
}
