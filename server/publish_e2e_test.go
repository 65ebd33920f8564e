package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/gatecast/gatecast/admin"
)

type publishOut struct {
	Topic           string `json:"topic"`
	Bytes           int    `json:"bytes"`
	JSON            bool   `json:"json"`
	LocalDeliveries int    `json:"local_deliveries"`
}

// A backend publishes through the admin API; live seed subscribers get it.
func TestServerSidePublish(t *testing.T) {
	n := startNode(t)
	dev := n.createToken("device", 0)
	cmds := n.createTag("devices/#")
	n.grant(dev, cmds, "read")
	exact := n.dialOK(t, dev.Token, "devices/7/cmd")
	wild := n.dialOK(t, dev.Token, "devices/+/cmd")
	other := n.dialOK(t, dev.Token, "devices/8/cmd")

	var res publishOut
	n.mustAPI("POST", "/api/v1/publish", map[string]any{"topic": "devices/7/cmd", "message": map[string]any{"reboot": true}}, &res)
	if res.LocalDeliveries != 2 || !res.JSON || res.Topic != "devices/7/cmd" {
		t.Fatalf("answer %+v", res)
	}
	exact.expectMessage("devices/7/cmd", `{"reboot":true}`)
	wild.expectMessage("devices/7/cmd", `{"reboot":true}`)

	// Bytes that are not JSON reach seed clients as a JSON string; bytes
	// that are JSON, as JSON.
	n.mustAPI("POST", "/api/v1/publish", map[string]any{"topic": "devices/8/cmd",
		"payload_base64": base64.StdEncoding.EncodeToString([]byte(`reboot <now> & "then"`))}, &res)
	if res.JSON || res.LocalDeliveries != 2 {
		t.Fatalf("answer %+v", res)
	}
	other.expectMessage("devices/8/cmd", `"reboot <now> & \"then\""`)
	wild.expectMessage("devices/8/cmd", `"reboot <now> & \"then\""`)
	n.mustAPI("POST", "/api/v1/publish", map[string]any{"topic": "devices/8/cmd",
		"payload_base64": base64.StdEncoding.EncodeToString([]byte(`[1,2]`))}, &res)
	other.expectMessage("devices/8/cmd", `[1,2]`)
	wild.expectMessage("devices/8/cmd", `[1,2]`)

	// gatecast publish, the CLI over the same route.
	var out, errOut bytes.Buffer
	code := admin.RunCLI(context.Background(), []string{"--admin-url", "http://" + n.AdminAddr(), "--admin-key", n.AdminKey(),
		"publish", "devices/7/cmd", `{"fw":"2.1"}`}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "delivered to 2 subscriber(s)") {
		t.Fatalf("gatecast publish: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	exact.expectMessage("devices/7/cmd", `{"fw":"2.1"}`)
	wild.expectMessage("devices/7/cmd", `{"fw":"2.1"}`)

	// Refused: a wildcard topic, no key.
	if code := n.api("POST", "/api/v1/publish", map[string]any{"topic": "devices/+/cmd", "message": 1}, nil); code != 400 {
		t.Fatalf("wildcard topic: HTTP %d", code)
	}
	exact.expectOpen() // nothing else was delivered

	// Every publish is in the audit log, with its topic, never its payload.
	var page struct {
		Entries []struct {
			Action string `json:"action"`
			Target string `json:"target"`
			Source string `json:"source"`
			Status int    `json:"status"`
			Detail any    `json:"detail"`
		} `json:"entries"`
	}
	n.mustAPI("GET", "/api/v1/audit?action=publish", nil, &page)
	if len(page.Entries) != 5 || page.Entries[0].Status != 400 || page.Entries[1].Source != "cli" ||
		page.Entries[1].Target != "topic devices/7/cmd" {
		t.Fatalf("publish entries: %+v", page.Entries)
	}
}

// In cluster mode a publish through one node reaches subscribers on every
// node.
func TestServerSidePublishCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster in -short")
	}
	nodes, _ := startCluster(t, false)
	a, b, c := nodes[0], nodes[1], nodes[2]
	dev := a.createToken("device", 0)
	n := a.createTag("devices/#")
	a.grant(dev, n, "read")
	onB := b.dialOK(t, dev.Token, "devices/+/cmd")
	onC := c.dialOK(t, dev.Token, "devices/42/cmd")
	onA := a.dialOK(t, dev.Token, "devices/#")

	var res publishOut
	a.mustAPI("POST", "/api/v1/publish", map[string]any{"topic": "devices/42/cmd", "message": map[string]any{"open": "valve"}}, &res)
	if res.LocalDeliveries != 1 {
		t.Fatalf("answer %+v (one subscriber on node A)", res)
	}
	for _, cl := range []*client{onA, onB, onC} {
		cl.expectMessage("devices/42/cmd", `{"open":"valve"}`)
	}
	// Through another node, bytes.
	c.mustAPI("POST", "/api/v1/publish", map[string]any{"topic": "devices/42/cmd",
		"payload_base64": base64.StdEncoding.EncodeToString([]byte("close"))}, &res)
	for _, cl := range []*client{onA, onB, onC} {
		cl.expectMessage("devices/42/cmd", `"close"`)
	}
}
