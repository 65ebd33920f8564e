package server

import (
	"github.com/gatecast/gatecast/broker"
)

// brokerPublisher is the admin API's server-side publish (admin.Publisher,
// POST /api/v1/publish) over the broker: broker.Publish delivers to every
// matching session on this node and, in cluster mode, forwards to the
// other nodes with matching subscribers.
type brokerPublisher struct{ b *broker.Broker }

// Publish delivers payload on topic and returns the deliveries on this
// node. The payload goes as it is: MQTT subscribers get its bytes, seed
// subscribers get it embedded as JSON when it is JSON and as a JSON string
// otherwise (the broker's seed encoder applies the rule).
func (p brokerPublisher) Publish(topic string, payload []byte, _ bool) (int, error) {
	return p.b.Publish(topic, payload)
}
