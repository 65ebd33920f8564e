package server

import (
	"fmt"
	"net"

	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/broker/mqtt"
	"github.com/gatecast/gatecast/netpoll"
)

// MQTTPath is the WebSocket path of MQTT over WebSocket (subprotocol mqtt).
const MQTTPath = "/mqtt"

// newMQTT builds the node's MQTT adapter from the configuration.
func newMQTT(cfg Config, n *Node) (*mqtt.Server, error) {
	policy := broker.RevokeClose
	if cfg.MQTTOnRevoke == "unsubscribe" {
		policy = broker.RevokeUnsubscribe
	}
	return mqtt.NewServer(mqtt.Config{
		Broker:              n.broker,
		OnRevoke:            policy,
		MaxPacketSize:       int(cfg.MQTTMaxPacket),
		MaxWebSocketMessage: cfg.MaxFrameSize,
		MaxInflight:         cfg.MQTTMaxInflight,
		MaxQueued:           cfg.SessionQueueMax,
		MaxSessionExpiry:    cfg.SessionExpiryMax,
		RetainStore:         retainStore(n.store),
		MaxQueuedBytes:      int(cfg.SessionQueueBytes),
		MaxQueuedTotal:      int(cfg.SessionQueueTotal),
		RetainedMax:         cfg.RetainedMax,
		RetainedMaxBytes:    int(cfg.RetainedMaxBytes),
		Logger:              n.log.With("component", "mqtt"),
		Registerer:          n.registry,
	})
}

// listenMQTT binds --mqtt-listen ("" disables MQTT over TCP) and serves it
// on the node's connection core.
func (n *Node) listenMQTT() error {
	if n.cfg.MQTTListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.MQTTListen)
	if err != nil {
		return fmt.Errorf("MQTT listener %s: %w", n.cfg.MQTTListen, err)
	}
	n.mqttLn = ln
	go func() {
		if err := n.ws.ServeStream(ln, mqttStream{n.mqtt}); err != nil {
			n.serveErr <- fmt.Errorf("MQTT listener: %w", err)
		}
	}()
	return nil
}

// MQTTAddr is the bound MQTT-over-TCP listener address ("" when disabled).
func (n *Node) MQTTAddr() string {
	if n.mqttLn == nil {
		return ""
	}
	return n.mqttLn.Addr().String()
}

// mqttStream opens an MQTT session for each TCP connection.
type mqttStream struct{ srv *mqtt.Server }

func (h mqttStream) OpenStream(c *netpoll.Conn) netpoll.Session {
	return h.srv.NewConn(c, false, c.RemoteAddr())
}
