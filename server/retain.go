package server

import (
	"context"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/broker/mqtt"
)

// retainStore keeps the MQTT adapter's retained messages in the node's
// store of record (the SQLite file, or the cluster's Postgres), so that
// they survive a restart. Every acl.Store is an acl.RetainedStore.
func retainStore(s acl.RetainedStore) mqtt.RetainStore {
	if s == nil {
		return nil // memory only
	}
	return retainAdapter{s}
}

// retainAdapter is an acl.RetainedStore seen as an mqtt.RetainStore: the
// two packages do not import each other, so it converts the two Retained
// types, field by field. Slices are passed on, not copied: the adapter
// never changes a message it has handed over, and the store only reads
// them.
type retainAdapter struct{ s acl.RetainedStore }

var _ mqtt.RetainStore = retainAdapter{}

func (a retainAdapter) LoadRetained(ctx context.Context) ([]mqtt.Retained, error) {
	rs, err := a.s.LoadRetained(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]mqtt.Retained, len(rs))
	for i, r := range rs {
		out[i] = mqtt.Retained{Topic: r.Topic, Payload: r.Payload, Props: r.Props, QoS: r.QoS, ExpiresAt: r.ExpiresAt}
	}
	return out, nil
}

func (a retainAdapter) PutRetained(ctx context.Context, r mqtt.Retained) error {
	return a.s.PutRetained(ctx, acl.Retained{Topic: r.Topic, Payload: r.Payload, Props: r.Props, QoS: r.QoS, ExpiresAt: r.ExpiresAt})
}

func (a retainAdapter) DeleteRetained(ctx context.Context, topic string) error {
	return a.s.DeleteRetained(ctx, topic)
}
