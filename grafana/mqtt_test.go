package grafana

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatecast/gatecast/server"
)

// mqttTimeout bounds every MQTT client operation of the live test.
const mqttTimeout = 5 * time.Second

// mqttTraffic gives the "MQTT" row of the traffic dashboard real values,
// with the Eclipse Paho clients (3.1.1: paho.mqtt.golang, 5: paho.golang)
// against node's MQTT listener. sensorsTag is the tag sensors/#, which the
// live test's seed publisher feeds ten times a second.
//
//   - a 3.1.1 client connects (accepted) and stays subscribed to sensors/#;
//   - a 3.1.1 client with an unknown secret is refused (bad_credentials);
//   - a read-only token publishes at QoS 1 (refused, not_authorized);
//   - a persistent 3.1.1 session (Clean Session 0) subscribes, disconnects,
//     is resumed (Session Present 1) and disconnects again: it stays
//     offline (gatecast_sessions_offline 1) for the rest of the test;
//   - a second connection with a live client identifier takes it over;
//   - a raw TCP client sends a malformed packet (protocol error);
//   - an MQTT 5 session with a 1 s Session Expiry Interval disconnects and
//     expires;
//   - an MQTT 5 client announcing a Maximum Packet Size smaller than the
//     seed publishes stays subscribed to sensors/#: every delivery to it is
//     dropped (too_large).
//
// Refused CONNECTs other than bad_credentials, invalid-topic and retain
// refusals and queue_full / outbox drops are not produced: only their
// panels' queries are checked (their series exist at zero).
func mqttTraffic(t *testing.T, api adminClient, node *server.Node, sensorsTag int64) {
	t.Helper()
	rw := api.createToken("mqtt", 10)
	api.grant(rw.ID, sensorsTag, "readwrite")
	ro := api.createToken("mqtt-ro", 2)
	api.grant(ro.ID, sensorsTag, "read")
	addr := node.MQTTAddr()
	url := "tcp://" + addr

	// Accepted, and delivered to for the rest of the test.
	live, err := mqttV3(url, "grafana-live", rw.Token, true)
	if err != nil {
		t.Fatalf("mqtt 3.1.1 connect: %v", err)
	}
	t.Cleanup(func() { live.Disconnect(100) })
	mqttV3Wait(t, "subscribe sensors/#", live.Subscribe("sensors/#", 0, func(pahov3.Client, pahov3.Message) {}))

	// Refused: not a token secret.
	if c, err := mqttV3(url, "grafana-bad", "not-a-real-token", true); err == nil {
		c.Disconnect(0)
		t.Fatal("mqtt connect with an unknown secret accepted")
	}

	// A publish the token may not make: 3.1.1 acknowledges it and drops it.
	reader, err := mqttV3(url, "grafana-ro", ro.Token, true)
	if err != nil {
		t.Fatalf("mqtt read-only connect: %v", err)
	}
	mqttV3Wait(t, "read-only QoS 1 publish", reader.Publish("sensors/mqtt/ro", 1, false, "refused"))
	reader.Disconnect(100)

	// A persistent session, resumed once, then left offline.
	for i := range 2 {
		c, err := mqttV3(url, "grafana-persistent", rw.Token, false)
		if err != nil {
			t.Fatalf("mqtt persistent connect %d: %v", i, err)
		}
		if i == 0 {
			mqttV3Wait(t, "persistent subscribe", c.Subscribe("sensors/#", 1, nil))
		}
		c.Disconnect(100)
	}

	// A takeover: the same token and client identifier twice.
	first, err := mqttV3(url, "grafana-twin", rw.Token, true)
	if err != nil {
		t.Fatalf("mqtt connect: %v", err)
	}
	second, err := mqttV3(url, "grafana-twin", rw.Token, true)
	if err != nil {
		t.Fatalf("mqtt takeover connect: %v", err)
	}
	second.Disconnect(100)
	first.Disconnect(0)

	// A protocol error: a fixed header whose remaining length has five
	// bytes (at most four are allowed).
	if err := mqttMalformed(addr); err != nil {
		t.Fatalf("malformed packet: %v", err)
	}

	// An MQTT 5 session that expires a second after its client left.
	expiring, err := mqttV5(addr, "grafana-expiring", rw.Token, &paho.ConnectProperties{SessionExpiryInterval: ptr[uint32](1)})
	if err != nil {
		t.Fatalf("mqtt 5 connect: %v", err)
	}
	if err := expiring.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("mqtt 5 disconnect: %v", err)
	}

	// An MQTT 5 subscriber no seed publish fits: its deliveries are dropped.
	small, err := mqttV5(addr, "grafana-small", rw.Token, &paho.ConnectProperties{MaximumPacketSize: ptr[uint32](20)})
	if err != nil {
		t.Fatalf("mqtt 5 connect: %v", err)
	}
	t.Cleanup(func() { small.Disconnect(&paho.Disconnect{}) })
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if sa, err := small.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#"}}}); err != nil || sa.Reasons[0] != 0 {
		t.Fatalf("mqtt 5 subscribe sensors/#: %+v %v", sa, err)
	}
}

func ptr[T any](v T) *T { return &v }

// mqttV3 connects a Paho 3.1.1 client; the token secret is the password.
func mqttV3(url, clientID, secret string, clean bool) (pahov3.Client, error) {
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername("device").SetPassword(secret).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(mqttTimeout)
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(mqttTimeout) {
		return nil, errors.New("no CONNACK in time")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func mqttV3Wait(t *testing.T, what string, tok pahov3.Token) {
	t.Helper()
	if !tok.WaitTimeout(mqttTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt %s: %v (or no answer in %v)", what, tok.Error(), mqttTimeout)
	}
}

// mqttV5 connects a Paho MQTT 5 client with the given CONNECT properties.
func mqttV5(addr, clientID, secret string, props *paho.ConnectProperties) (*paho.Client, error) {
	nc, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn:          nc,
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "device", PasswordFlag: true, Password: []byte(secret),
		Properties: props}); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// mqttMalformed sends a packet header the broker must refuse and waits
// for it to close the connection.
func mqttMalformed(addr string) error {
	nc, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := nc.Write([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}); err != nil {
		return err
	}
	_ = nc.SetReadDeadline(time.Now().Add(mqttTimeout))
	n, err := io.Copy(io.Discard, nc)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the broker kept the connection open for %v", mqttTimeout)
	case n > 0:
		return errors.New("the broker answered a malformed packet instead of closing")
	}
	return nil // EOF, or a reset: closed
}
