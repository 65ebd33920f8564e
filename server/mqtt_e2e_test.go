package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatecast/gatecast/internal/testserver"
)

// End-to-end MQTT tests with clients nobody here wrote: the Eclipse Paho Go
// clients (3.1.1: paho.mqtt.golang, 5: paho.golang) and Mosquitto's
// command-line clients, against a real node.

// v3Client connects a Paho 3.1.1 client; url is tcp://… or ws://…/mqtt.
func v3Client(t *testing.T, url, clientID, secret string) (pahov3.Client, chan pahov3.Message) {
	t.Helper()
	msgs := make(chan pahov3.Message, 100)
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername("device").SetPassword(secret).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m })
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho 3.1.1 connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, msgs
}

func v3Subscribe(t *testing.T, c pahov3.Client, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if st, ok := tok.(*pahov3.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				t.Fatalf("subscribe %s refused", f)
			}
		}
	}
}

func expectV3(t *testing.T, msgs chan pahov3.Message, topic, payload string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("got %s %q, want %s %q", m.Topic(), m.Payload(), topic, payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no message on %s", topic)
	}
}

// v5Conn is a Paho MQTT 5 client with its received publishes and the
// server's DISCONNECT.
type v5Conn struct {
	c    *paho.Client
	msgs chan *paho.Publish
	disc chan *paho.Disconnect
}

func v5Client(t *testing.T, addr, clientID, secret string) (*v5Conn, *paho.Connack, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	v := &v5Conn{msgs: make(chan *paho.Publish, 100), disc: make(chan *paho.Disconnect, 1)}
	v.c = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			v.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { v.disc <- d },
		OnClientError:      func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := v.c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "device", PasswordFlag: true, Password: []byte(secret)})
	if err == nil {
		t.Cleanup(func() { v.c.Disconnect(&paho.Disconnect{}) })
	}
	return v, ca, err
}

func (v *v5Conn) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := v.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa.Reasons[0]
}

func (v *v5Conn) expect(t *testing.T, topic, payload string) *paho.Publish {
	t.Helper()
	select {
	case p := <-v.msgs:
		if p.Topic != topic || string(p.Payload) != payload {
			t.Fatalf("got %s %q, want %s %q", p.Topic, p.Payload, topic, payload)
		}
		return p
	case <-time.After(5 * time.Second):
		t.Fatalf("no message on %s", topic)
	}
	return nil
}

func (v *v5Conn) expectDisconnect(t *testing.T, code byte) *paho.Disconnect {
	t.Helper()
	select {
	case d := <-v.disc:
		if d.ReasonCode != code {
			t.Fatalf("DISCONNECT %#x, want %#x", d.ReasonCode, code)
		}
		return d
	case <-time.After(5 * time.Second):
		t.Fatalf("no DISCONNECT %#x", code)
	}
	return nil
}

// One topic space: a seed publish reaches MQTT 3.1.1 and 5 subscribers (the
// JSON text of message), an MQTT publish reaches seed subscribers (JSON
// embedded when it is JSON, else a JSON string), and each protocol's echo
// rule holds.
func TestMQTTSeedMixedFanOut(t *testing.T) {
	f := newFleet(t)
	v3, v3msgs := v3Client(t, "tcp://"+f.MQTTAddr(), "v3-sub", f.rw.Token)
	v3Subscribe(t, v3, "sensors/#", 1)
	v5, _, err := v5Client(t, f.MQTTAddr(), "v5-sub", f.ro.Token)
	if err != nil {
		t.Fatal(err)
	}
	if code := v5.subscribe(t, "sensors/+/temp", 1); code != 1 {
		t.Fatalf("v5 SUBACK %#x", code)
	}
	seed := f.dialOK(t, f.ro.Token, "sensors/#")
	seedPub := f.dialOK(t, f.rw.Token, "alerts/#")

	seedPub.publish("sensors/d1/temp", `{"c":21.5}`)
	expectV3(t, v3msgs, "sensors/d1/temp", `{"c":21.5}`)
	v5.expect(t, "sensors/d1/temp", `{"c":21.5}`)
	seed.expectMessage("sensors/d1/temp", `{"c":21.5}`)

	// An MQTT publish: JSON and not JSON. The 3.1.1 publisher hears itself.
	for _, payload := range []string{`[1,2]`, `plain text`} {
		tok := v3.Publish("sensors/d2/temp", 1, false, payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		expectV3(t, v3msgs, "sensors/d2/temp", payload)
		v5.expect(t, "sensors/d2/temp", payload)
	}
	seed.expectMessage("sensors/d2/temp", `[1,2]`)
	seed.expectMessage("sensors/d2/temp", `"plain text"`)
}

// The security model for MQTT sessions: grants judge SUBSCRIBE and PUBLISH,
// and a rights change is enforced on live sessions before the admin call
// returns (DISCONNECT 0x87 with the reason, 0x98 for a kick).
func TestMQTTGrantsAndRevocation(t *testing.T) {
	f := newFleet(t)
	// read-only token: subscribe outside the grant refused, publish refused with 0x87
	ro, _, err := v5Client(t, f.MQTTAddr(), "ro", f.ro.Token)
	if err != nil {
		t.Fatal(err)
	}
	if code := ro.subscribe(t, "alerts/#", 0); code != 0x87 {
		t.Fatalf("SUBACK outside the grant: %#x, want 0x87", code)
	}
	if code := ro.subscribe(t, "sensors/#", 0); code != 0 {
		t.Fatalf("SUBACK in the grant: %#x", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := ro.c.Publish(ctx, &paho.Publish{Topic: "sensors/x", QoS: 1, Payload: []byte("1")})
	if err == nil || resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("QoS 1 publish without readwrite: %+v %v, want PUBACK 0x87", resp, err)
	}

	// wrong secret: CONNACK 0x86
	if _, ca, err := v5Client(t, f.MQTTAddr(), "bad", "not-a-token-secret"); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("bad secret: %+v %v", ca, err)
	}

	// permission removed → DISCONNECT 0x87 naming the filter, before the call returns
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", f.ro.ID, f.sensors.ID), nil, nil)
	d := ro.expectDisconnect(t, 0x87)
	if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "sensors/#") {
		t.Errorf("reason string %+v", d.Properties)
	}

	// kick → 0x98
	rw, _, err := v5Client(t, f.MQTTAddr(), "rw", f.rw.Token)
	if err != nil {
		t.Fatal(err)
	}
	var conns struct {
		Connections []struct {
			ID       uint64 `json:"id"`
			Protocol string `json:"protocol"`
			ClientID string `json:"client_id"`
		} `json:"connections"`
	}
	f.mustAPI("GET", fmt.Sprintf("/api/v1/connections?token_id=%d", f.rw.ID), nil, &conns)
	if len(conns.Connections) != 1 || conns.Connections[0].Protocol != "mqtt5" || conns.Connections[0].ClientID != "rw" {
		t.Fatalf("connections %+v", conns)
	}
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/connections/%d", conns.Connections[0].ID), nil, nil)
	rw.expectDisconnect(t, 0x98)

	// disabled token → 3.1.1 client closed
	lost := make(chan struct{})
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + f.MQTTAddr()).SetClientID("v3").
		SetPassword(f.rw.Token).SetUsername("d").SetAutoReconnect(false).
		SetConnectionLostHandler(func(pahov3.Client, error) { close(lost) })
	v3 := pahov3.NewClient(opts)
	if tok := v3.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	f.mustAPI("PATCH", fmt.Sprintf("/api/v1/tokens/%d", f.rw.ID), map[string]any{"disabled": true}, nil)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the 3.1.1 client of a disabled token is still connected")
	}
}

// MQTT over WebSocket at /mqtt (subprotocol mqtt), as browsers use it.
func TestMQTTOverWebSocket(t *testing.T) {
	f := newFleet(t)
	sub, msgs := v3Client(t, "ws://"+f.WSAddr()+"/mqtt", "ws-sub", f.rw.Token)
	v3Subscribe(t, sub, "sensors/#", 0)
	pub, _ := v3Client(t, "tcp://"+f.MQTTAddr(), "tcp-pub", f.rw.Token)
	if tok := pub.Publish("sensors/ws", 0, false, "over ws"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	expectV3(t, msgs, "sensors/ws", "over ws")
}

// Mosquitto's own clients, 3.1.1 and 5: subscribe, publish, refused
// credentials.
func TestMQTTMosquittoClients(t *testing.T) {
	testserver.Ensure(t, "mosquitto-clients", "mosquitto_pub and mosquitto_sub", func() bool {
		_, err := exec.LookPath("mosquitto_sub")
		return err == nil
	})
	f := newFleet(t)
	host, port, _ := net.SplitHostPort(f.MQTTAddr())
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sub := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-V", v, "-u", "dev", "-P", f.ro.Token,
				"-t", "sensors/#", "-C", "2", "-v", "-q", "1")
			out, err := sub.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 4)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			// wait until the subscription is live: mosquitto_sub's session shows in the listing
			eventually(t, "mosquitto_sub connected", func() bool {
				var conns struct {
					Connections []struct{ Subscriptions []string } `json:"connections"`
				}
				f.mustAPI("GET", fmt.Sprintf("/api/v1/connections?token_id=%d", f.ro.ID), nil, &conns)
				return len(conns.Connections) == 1 && len(conns.Connections[0].Subscriptions) == 1
			})
			for i, msg := range []string{"one", `{"n":2}`} {
				pub := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-V", v, "-u", "dev", "-P", f.rw.Token,
					"-t", fmt.Sprintf("sensors/m%d", i), "-m", msg, "-q", "1")
				if b, err := pub.CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v: %s", err, b)
				}
			}
			var got []string
			for l := range lines {
				got = append(got, l)
			}
			if err := sub.Wait(); err != nil {
				t.Fatalf("mosquitto_sub: %v (got %q)", err, got)
			}
			if want := []string{"sensors/m0 one", `sensors/m1 {"n":2}`}; strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("mosquitto_sub printed %q, want %q", got, want)
			}
			// refused: a wrong secret, and a publish the token may not make (5: PUBACK 0x87)
			bad := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-V", v, "-P", "wrong-secret", "-u", "x", "-t", "sensors/x", "-m", "x")
			if b, err := bad.CombinedOutput(); err == nil {
				t.Fatalf("mosquitto_pub with a wrong secret succeeded: %s", b)
			} else if !strings.Contains(strings.ToLower(string(b)), "bad user name or password") {
				t.Errorf("mosquitto_pub with a wrong secret said %q", b)
			}
		})
	}
}

// A second connection with the same client identifier (and token) takes the
// session over: the first gets DISCONNECT 0x8E.
func TestMQTTTakeover(t *testing.T) {
	f := newFleet(t)
	first, _, err := v5Client(t, f.MQTTAddr(), "device-1", f.rw.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v5Client(t, f.MQTTAddr(), "device-1", f.rw.Token); err != nil {
		t.Fatal(err)
	}
	first.expectDisconnect(t, 0x8E)
}

// Wills: published when a session ends without DISCONNECT, if the token may
// still publish to the will topic.
func TestMQTTWill(t *testing.T) {
	f := newFleet(t)
	watcher, msgs := v3Client(t, "tcp://"+f.MQTTAddr(), "watcher", f.ro.Token)
	v3Subscribe(t, watcher, "sensors/#", 0)
	var mu sync.Mutex
	for _, tc := range []struct{ secret, id string }{{f.rw.Token, "with-rights"}, {f.ro.Token, "read-only"}} {
		opts := pahov3.NewClientOptions().AddBroker("tcp://"+f.MQTTAddr()).SetClientID(tc.id).
			SetPassword(tc.secret).SetUsername("d").SetAutoReconnect(false).
			SetWill("sensors/"+tc.id+"/status", "offline", 0, false)
		c := pahov3.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		mu.Lock()
		// kill the session without DISCONNECT: kick it
		var conns struct {
			Connections []struct {
				ID       uint64 `json:"id"`
				ClientID string `json:"client_id"`
			} `json:"connections"`
		}
		f.mustAPI("GET", "/api/v1/connections", nil, &conns)
		for _, cn := range conns.Connections {
			if cn.ClientID == tc.id {
				f.mustAPI("DELETE", fmt.Sprintf("/api/v1/connections/%d", cn.ID), nil, nil)
			}
		}
		mu.Unlock()
	}
	expectV3(t, msgs, "sensors/with-rights/status", "offline")
	select {
	case m := <-msgs:
		t.Fatalf("unexpected will %s %q (the read-only token may not publish it)", m.Topic(), m.Payload())
	case <-time.After(300 * time.Millisecond):
	}
}

// Cluster: a PUBLISH on one node reaches seed and MQTT subscribers on the
// others exactly once (nodes forward the neutral message), and a revocation
// on one node's admin API cuts an MQTT session on another before it returns.
func TestMQTTCluster(t *testing.T) {
	nodes, _ := startCluster(t, false)
	a, b, c := nodes[0], nodes[1], nodes[2]
	tok := a.createToken("fleet", 0)
	tag := a.createTag("fleet/#")
	a.grant(tok, tag, "readwrite")

	v5, _, err := v5Client(t, b.MQTTAddr(), "on-b", tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if code := v5.subscribe(t, "fleet/+/cmd", 1); code != 1 {
		t.Fatalf("SUBACK %#x", code)
	}
	v3, v3msgs := v3Client(t, "tcp://"+c.MQTTAddr(), "on-c", tok.Token)
	v3Subscribe(t, v3, "fleet/#", 0)
	seed := c.dialOK(t, tok.Token, "fleet/#")
	// The subscriptions are routed to every node before SUBACK: publish on A.
	pub, _ := v3Client(t, "tcp://"+a.MQTTAddr(), "on-a", tok.Token)
	if tk := pub.Publish("fleet/d1/cmd", 1, false, `{"reboot":true}`); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatal(tk.Error())
	}
	v5.expect(t, "fleet/d1/cmd", `{"reboot":true}`)
	expectV3(t, v3msgs, "fleet/d1/cmd", `{"reboot":true}`)
	seed.expectMessage("fleet/d1/cmd", `{"reboot":true}`)
	select {
	case p := <-v5.msgs:
		t.Fatalf("delivered twice: %s", p.Topic)
	case m := <-v3msgs:
		t.Fatalf("delivered twice: %s", m.Topic())
	case <-time.After(200 * time.Millisecond):
	}

	// revoke on A: the MQTT 5 session on B is disconnected with 0x87
	a.mustAPI("DELETE", "/api/v1/tokens/"+itoa(tok.ID)+"/permissions/"+itoa(tag.ID), nil, nil)
	v5.expectDisconnect(t, 0x87)
}

// Persistent sessions with a real client: a Paho 3.1.1 device with Clean
// Session 0 goes away, QoS 1 commands are published meanwhile, and when it
// reconnects it gets them (Session Present).
func TestMQTTPersistentSessionPaho(t *testing.T) {
	f := newFleet(t)
	msgs := make(chan pahov3.Message, 10)
	opts := func() *pahov3.ClientOptions {
		return pahov3.NewClientOptions().AddBroker("tcp://" + f.MQTTAddr()).SetClientID("field-device").
			SetUsername("d").SetPassword(f.ro.Token).SetCleanSession(false).SetAutoReconnect(false).
			SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m })
	}
	dev := pahov3.NewClient(opts())
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	v3Subscribe(t, dev, "sensors/field-device/cmd", 1)
	dev.Disconnect(50)

	backend, _ := v3Client(t, "tcp://"+f.MQTTAddr(), "backend", f.rw.Token)
	for _, cmd := range []string{"reboot", "update"} {
		if tok := backend.Publish("sensors/field-device/cmd", 1, false, cmd); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	var present bool
	o := opts().SetOnConnectHandler(func(c pahov3.Client) {})
	dev = pahov3.NewClient(o)
	tok := dev.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	present = tok.(*pahov3.ConnectToken).SessionPresent()
	defer dev.Disconnect(50)
	if !present {
		t.Fatal("CONNACK Session Present 0 for a persistent session")
	}
	expectV3(t, msgs, "sensors/field-device/cmd", "reboot")
	expectV3(t, msgs, "sensors/field-device/cmd", "update")
}

// A node shutting down says goodbye in each protocol: MQTT 5 DISCONNECT 0x8B.
func TestMQTTShutdownDisconnect(t *testing.T) {
	f := newFleet(t)
	v5, _, err := v5Client(t, f.MQTTAddr(), "dev", f.rw.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go f.Shutdown(ctx)
	v5.expectDisconnect(t, 0x8B)
}

// Shared subscriptions with real MQTT 5 clients: three members of one
// group share the messages, each delivered once.
func TestMQTTSharedSubscriptionPaho(t *testing.T) {
	f := newFleet(t)
	var members []*v5Conn
	for i := range 3 {
		m, _, err := v5Client(t, f.MQTTAddr(), fmt.Sprintf("worker-%d", i), f.rw.Token)
		if err != nil {
			t.Fatal(err)
		}
		if code := m.subscribe(t, "$share/workers/sensors/+/job", 0); code != 0 {
			t.Fatalf("SUBACK %#x", code)
		}
		members = append(members, m)
	}
	pub, _ := v3Client(t, "tcp://"+f.MQTTAddr(), "dispatcher", f.rw.Token)
	const n = 30
	for i := range n {
		if tk := pub.Publish(fmt.Sprintf("sensors/%d/job", i), 0, false, "job"); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
			t.Fatal(tk.Error())
		}
	}
	got := 0
	deadline := time.After(5 * time.Second)
	for got < n {
		select {
		case <-members[0].msgs:
		case <-members[1].msgs:
		case <-members[2].msgs:
		case <-deadline:
			t.Fatalf("%d of %d jobs delivered", got, n)
		}
		got++
	}
	select {
	case <-members[0].msgs:
		t.Fatal("a job was delivered twice")
	case <-members[1].msgs:
		t.Fatal("a job was delivered twice")
	case <-members[2].msgs:
		t.Fatal("a job was delivered twice")
	case <-time.After(200 * time.Millisecond):
	}
}

// An offline persistent session loses a revoked right too: the commands
// queued for a filter whose grant was removed while the device was away
// are never delivered, the others are.
func TestMQTTOfflineRevocationPaho(t *testing.T) {
	f := newFleet(t)
	dev := f.createToken("field", 0)
	f.grant(dev, f.sensors, "read")
	f.grant(dev, f.alert, "read")
	msgs := make(chan pahov3.Message, 10)
	opts := func() *pahov3.ClientOptions {
		return pahov3.NewClientOptions().AddBroker("tcp://" + f.MQTTAddr()).SetClientID("field-1").
			SetUsername("d").SetPassword(dev.Token).SetCleanSession(false).SetAutoReconnect(false).
			SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m })
	}
	c := pahov3.NewClient(opts())
	if tk := c.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatal(tk.Error())
	}
	v3Subscribe(t, c, "sensors/field-1/cmd", 1)
	v3Subscribe(t, c, "alerts/field-1", 1)
	c.Disconnect(50)

	backend, _ := v3Client(t, "tcp://"+f.MQTTAddr(), "backend", f.rw.Token)
	for _, topic := range []string{"sensors/field-1/cmd", "alerts/field-1"} {
		if tk := backend.Publish(topic, 1, false, "queued"); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
			t.Fatal(tk.Error())
		}
	}
	f.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", dev.ID, f.sensors.ID), nil, nil)

	c = pahov3.NewClient(opts())
	if tk := c.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatal(tk.Error())
	}
	defer c.Disconnect(50)
	expectV3(t, msgs, "alerts/field-1", "queued")
	select {
	case m := <-msgs:
		t.Fatalf("a message for a revoked right was delivered: %s", m.Topic())
	case <-time.After(300 * time.Millisecond):
	}
}
