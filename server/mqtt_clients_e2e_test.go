package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatecast/gatecast/internal/testserver"
)

// More third-party MQTT clients: Debian's python3-paho-mqtt (MQTT 5 over
// TCP, with user properties) and MQTT.js from npm (MQTT 5 over WebSocket at
// /mqtt, as a browser would), each installed when missing.

// debianPython is Debian's interpreter, which sees Debian's python3-*
// packages (a pyenv shim on PATH would not).
func debianPython() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

const pahoScript = `
import json, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
host, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = threading.Event()
out = {}
def on_connect(c, u, flags, rc, props=None):
    out["connack"] = int(rc.value) if hasattr(rc, "value") else int(rc)
    c.subscribe("sensors/py/#", qos=1)
def on_subscribe(c, u, mid, rcs, props=None):
    out["suback"] = [int(r.value) if hasattr(r, "value") else int(r) for r in rcs]
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("site", "lab-2")]
    p.ContentType = "application/json"
    c.publish("sensors/py/temp", '{"c":19}', qos=1, properties=p)
def on_message(c, u, m):
    props = getattr(m, "properties", None)
    out["message"] = {"topic": m.topic, "payload": m.payload.decode(), "qos": m.qos,
        "user": [list(x) for x in getattr(props, "UserProperty", [])] if props else [],
        "content_type": getattr(props, "ContentType", "") if props else ""}
    got.set()
c = mqtt.Client(client_id="py-dev", protocol=mqtt.MQTTv5)
c.username_pw_set("py", secret)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port, keepalive=30)
c.loop_start()
ok = got.wait(10)
c.disconnect(); c.loop_stop()
print(json.dumps(out))
sys.exit(0 if ok else 1)
`

// Python paho-mqtt, MQTT 5: CONNACK, SUBACK, and its own publish back
// with the user property and content type intact.
func TestMQTTPythonPaho(t *testing.T) {
	py := debianPython()
	testserver.Ensure(t, "python3-paho-mqtt", "the paho-mqtt Python module", func() bool {
		return exec.Command(py, "-c", "import paho.mqtt.client").Run() == nil
	})
	f := newFleet(t)
	host, port := splitAddr(t, f.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, py, "-c", pahoScript, host, port, f.rw.Token).CombinedOutput()
	if err != nil {
		t.Fatalf("python paho: %v\n%s", err, b)
	}
	var out struct {
		Connack int   `json:"connack"`
		Suback  []int `json:"suback"`
		Message struct {
			Topic, Payload string
			QoS            int        `json:"qos"`
			User           [][]string `json:"user"`
			ContentType    string     `json:"content_type"`
		} `json:"message"`
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("python output %q: %v", b, err)
	}
	m := out.Message
	if out.Connack != 0 || len(out.Suback) != 1 || out.Suback[0] != 1 || m.Topic != "sensors/py/temp" || m.Payload != `{"c":19}` ||
		m.QoS != 1 || len(m.User) != 1 || m.User[0][0] != "site" || m.User[0][1] != "lab-2" || m.ContentType != "application/json" {
		t.Fatalf("python paho saw %+v", out)
	}
}

const mqttjsScript = `
const mqtt = require("mqtt");
const [url, secret] = process.argv.slice(2);
const c = mqtt.connect(url, { protocolVersion: 5, username: "browser", password: secret, clientId: "js-dev", reconnectPeriod: 0 });
const done = (o, code) => { console.log(JSON.stringify(o)); c.end(true); process.exit(code); };
setTimeout(() => done({ error: "timeout" }, 1), 10000);
c.on("error", (e) => done({ error: String(e) }, 1));
c.on("connect", () => {
  c.subscribe("sensors/js/#", { qos: 1 }, (err, granted) => {
    if (err) return done({ error: String(err) }, 1);
    c.publish("sensors/js/temp", "22.5", { qos: 1 });
  });
});
c.on("message", (topic, payload) => done({ topic, payload: payload.toString() }, 0));
`

// mqttJS installs MQTT.js from npm once per test binary and returns the
// directory holding it.
var mqttJS = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gatecast-mqttjs-")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--silent", "mqtt@5")
	install.Dir = dir
	if b, err := install.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install mqtt: %v\n%s", err, b)
	}
	return dir, nil
})

func needMQTTJS(t *testing.T) string {
	t.Helper()
	testserver.Ensure(t, "npm", "npm (for MQTT.js)", func() bool {
		_, err := exec.LookPath("npm")
		return err == nil
	})
	mqttJSUsed.Store(true)
	dir, err := mqttJS()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// mqttJSUsed: a test installed MQTT.js (TestMain removes it afterwards).
var mqttJSUsed atomic.Bool

// MQTT.js over WebSocket at /mqtt (subprotocol mqtt), MQTT 5.
func TestMQTTJSOverWebSocket(t *testing.T) {
	dir := needMQTTJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := filepath.Join(t.TempDir(), "client.js")
	if err := os.WriteFile(script, []byte(mqttjsScript), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	run := exec.CommandContext(ctx, "node", script, "ws://"+f.WSAddr()+"/mqtt", f.rw.Token)
	run.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	b, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("MQTT.js: %v\n%s", err, b)
	}
	var out struct{ Topic, Payload, Error string }
	if err := json.Unmarshal(b[strings.LastIndexByte(strings.TrimSpace(string(b)), '\n')+1:], &out); err != nil || out.Topic != "sensors/js/temp" || out.Payload != "22.5" {
		t.Fatalf("MQTT.js saw %q (%v)", b, err)
	}
}

func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("address %q", addr)
	}
	return addr[:i], addr[i+1:]
}

const mqttjsAliasScript = `
const mqtt = require("mqtt");
const [url, secret] = process.argv.slice(2);
const c = mqtt.connect(url, { protocolVersion: 5, username: "d", password: secret, clientId: "js-alias",
  reconnectPeriod: 0, properties: { topicAliasMaximum: 4 } });
const got = [];
const done = (o, code) => { console.log(JSON.stringify(o)); c.end(true); process.exit(code); };
setTimeout(() => done({ error: "timeout", got }, 1), 10000);
c.on("error", (e) => done({ error: String(e), got }, 1));
c.on("connect", () => c.subscribe("sensors/#", { qos: 1 }, (err) => {
  if (err) return done({ error: String(err) }, 1);
  console.log("subscribed");
}));
c.on("message", (topic, payload, packet) => {
  got.push({ topic, payload: payload.toString(), alias: (packet.properties || {}).topicAlias || 0 });
  if (got.length === 3) done({ got }, 0);
});
`

// Server → client topic aliases with MQTT.js, which resolves them: every
// message shows its full topic, though the second and third came with the
// alias alone.
func TestMQTTJSServerTopicAliases(t *testing.T) {
	dir := needMQTTJS(t)
	f := newFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := filepath.Join(t.TempDir(), "alias.js")
	if err := os.WriteFile(script, []byte(mqttjsAliasScript), 0o600); err != nil {
		t.Fatal(err)
	}
	run := exec.CommandContext(ctx, "node", script, "ws://"+f.WSAddr()+"/mqtt", f.ro.Token)
	run.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "subscribed" {
		t.Fatalf("MQTT.js: %q", sc.Text())
	}
	pub, _ := v3Client(t, "tcp://"+f.MQTTAddr(), "pub", f.rw.Token)
	for i := range 3 {
		if tk := pub.Publish("sensors/with/a/long/topic/name", 1, false, fmt.Sprint(i)); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
			t.Fatal(tk.Error())
		}
	}
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("MQTT.js: %v (%s)", err, last)
	}
	var out struct {
		Got []struct {
			Topic, Payload string
			Alias          int
		}
	}
	if err := json.Unmarshal([]byte(last), &out); err != nil || len(out.Got) != 3 {
		t.Fatalf("MQTT.js printed %q (%v)", last, err)
	}
	for i, m := range out.Got {
		if m.Topic != "sensors/with/a/long/topic/name" || m.Payload != fmt.Sprint(i) || m.Alias != 1 {
			t.Fatalf("message %d: %+v (want the full topic, alias 1)", i, m)
		}
	}
}
