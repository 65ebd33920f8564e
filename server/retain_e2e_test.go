package server

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/sqlite"
)

// Retained MQTT messages are kept in the store of record: a node started
// on the data directory of one that was shut down delivers them, with the
// retain flag, to a new subscriber; a retained publish with an empty
// payload clears its topic for the nodes started after it too.
func TestMQTTRetainedSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	onDir := func(c *Config) { c.DataDir = dir }

	n1 := startNode(t, onDir)
	tok := n1.createToken("device", 0)
	n1.grant(tok, n1.createTag("home/#"), "readwrite")

	// A second handle on the node's SQLite file shows what the background
	// writer has stored so far.
	probe, err := sqlite.Open(filepath.Join(dir, "gatecast.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { probe.Close() })
	waitStored := func(what string, want map[string][]byte) {
		t.Helper()
		var got []acl.Retained
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got, err = probe.LoadRetained(context.Background()); err != nil {
				t.Fatalf("%s: reading the store: %v", what, err)
			}
			if retainSameStored(got, want) {
				return
			}
		}
		t.Fatalf("%s: the store holds %s, want %s", what, retainDescribe(got), retainDescribeMap(want))
	}

	binary := []byte{0, 1, 0, 0xff, 0}
	want := map[string][]byte{
		"home/door":   []byte("open"),
		"home/window": []byte("closed"),
		"home/bin":    binary,
	}
	pub, _ := v3Client(t, "tcp://"+n1.MQTTAddr(), "publisher-1", tok.Token)
	for _, topic := range []string{"home/door", "home/window", "home/bin"} {
		retainPublish(t, pub, topic, true, want[topic])
	}
	retainPublish(t, pub, "home/plain", false, []byte("not retained"))
	waitStored("after the retained publishes", want)
	pub.Disconnect(100)
	retainShutdown(t, n1.Node)

	// The second node loads them; a new client gets them on SUBSCRIBE.
	n2 := startNode(t, onDir)
	sub, msgs := v3Client(t, "tcp://"+n2.MQTTAddr(), "subscriber-2", tok.Token)
	v3Subscribe(t, sub, "home/#", 1)
	retainExpect(t, msgs, want)

	// An empty retained payload clears the topic, in the store too.
	pub2, _ := v3Client(t, "tcp://"+n2.MQTTAddr(), "publisher-2", tok.Token)
	retainPublish(t, pub2, "home/window", true, nil)
	delete(want, "home/window")
	waitStored("after clearing home/window", want)
	pub2.Disconnect(100)
	sub.Disconnect(100)
	retainShutdown(t, n2.Node)

	n3 := startNode(t, onDir)
	sub3, msgs3 := v3Client(t, "tcp://"+n3.MQTTAddr(), "subscriber-3", tok.Token)
	v3Subscribe(t, sub3, "home/#", 1)
	retainExpect(t, msgs3, want)
}

func retainPublish(t *testing.T, c pahov3.Client, topic string, retain bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func retainShutdown(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// retainExpect receives exactly the retained messages of want, in any
// order, each with the retain flag and QoS 1, and then nothing more for a
// while.
func retainExpect(t *testing.T, msgs chan pahov3.Message, want map[string][]byte) {
	t.Helper()
	seen := map[string]bool{}
	for len(seen) < len(want) {
		select {
		case m := <-msgs:
			w, ok := want[m.Topic()]
			switch {
			case !ok || seen[m.Topic()]:
				t.Fatalf("unexpected message on %s: %q (retain %v)", m.Topic(), m.Payload(), m.Retained())
			case !bytes.Equal(m.Payload(), w):
				t.Fatalf("%s: payload %q, want %q", m.Topic(), m.Payload(), w)
			case !m.Retained():
				t.Fatalf("%s: delivered without the retain flag", m.Topic())
			case m.Qos() != 1:
				t.Fatalf("%s: QoS %d, want 1", m.Topic(), m.Qos())
			}
			seen[m.Topic()] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("retained messages received: %v; want %s", seen, retainDescribeMap(want))
		}
	}
	select {
	case m := <-msgs:
		t.Fatalf("unexpected message on %s: %q (retain %v)", m.Topic(), m.Payload(), m.Retained())
	case <-time.After(300 * time.Millisecond):
	}
}

func retainSameStored(got []acl.Retained, want map[string][]byte) bool {
	if len(got) != len(want) {
		return false
	}
	for _, r := range got {
		if w, ok := want[r.Topic]; !ok || !bytes.Equal(r.Payload, w) || r.QoS != 1 || !r.ExpiresAt.IsZero() {
			return false
		}
	}
	return true
}

func retainDescribe(rs []acl.Retained) string {
	m := map[string][]byte{}
	for _, r := range rs {
		m[r.Topic] = r.Payload
	}
	return retainDescribeMap(m)
}

func retainDescribeMap(m map[string][]byte) string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}
