package server

import (
	"bytes"
	"encoding/json"

	"github.com/gatecast/gatecast/broker"
)

// brokerPublisher is the admin API's server-side publish (admin.Publisher,
// POST /api/v1/publish) over the broker: broker.Publish delivers to every
// matching session on this node and, in cluster mode, forwards to the
// other nodes with matching subscribers.
type brokerPublisher struct{ b *broker.Broker }

// Publish delivers payload on topic and returns the deliveries on this node.
//
// broker.Publish takes a JSON message. Until the broker takes raw payloads
// (it is moving to a protocol-neutral message), a payload that is not JSON
// is delivered the way the seed protocol documents for any non-JSON
// payload: as a JSON string. That string is encoded here, without HTML
// escaping, as the broker's own seed encoder does; bytes that are not
// UTF-8 become U+FFFD, which is all a seed client's text frame can carry.
func (p brokerPublisher) Publish(topic string, payload []byte, isJSON bool) (int, error) {
	if !isJSON {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(string(payload)); err != nil {
			return 0, err
		}
		payload = bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	return p.b.Publish(topic, payload)
}
