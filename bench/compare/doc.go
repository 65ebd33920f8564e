// Package compare runs the same load scenarios against Gatecast and against
// peer brokers (Mosquitto and the NATS server) on the same machine and
// prints the figures side by side with the ratio Gatecast / peer, in two
// tables: the native one, each broker driven over WebSocket in its own
// protocol by one harness, and the MQTT one, every broker driven by the
// same MQTT 3.1.1 QoS 0 client (Gatecast over TCP and over WebSocket at
// /mqtt, Mosquitto over TCP, the NATS server's MQTT listener).
//
// It owns: the client side of three protocols (Gatecast's seed JSON
// protocol and the NATS text protocol over WebSocket, MQTT 3.1.1 at QoS 0
// over WebSocket or plain TCP, with a user name and password when the
// broker wants them), behind one small interface (Protocol dials and
// subscribes, Conn publishes and decodes deliveries into topic + payload);
// the throwaway broker processes of a run (started on random loopback
// ports in a temporary directory and stopped by their PID, under taskset
// on CPUs of their own when the run is pinned, while the harness pins its
// threads to the others); the scenarios (fan-in, fan-out, 1→1 latency, 1→1
// latency under a fan-in load at a share of the capacity the same run
// measured, idle connections), the same code for both tables; and the
// report (plain-text tables and JSON), where every run carries the
// broker's CPU use and the harness's own, so that a figure the harness
// could not drive further is marked harness-bound rather than credited to
// the broker, and where the MQTT table's targets are judged.
//
// It must not know Gatecast's internals: Gatecast is reached, like the
// peers, only over the network (the WebSocket endpoint, the MQTT listener
// and the admin HTTP API, through which it creates the token whose secret
// the seed client sends in its header and the MQTT client as its CONNECT
// password), so the same harness code measures all of them. The only Gatecast
// package it imports is proto, for the seed frame decoder, the way the
// loadtest package does. Tests start an in-process node through package
// server; the command-line run starts the gatecast binary.
//
// Every scenario is bounded in connections, messages and time. Client
// connections are goroutine-per-connection (at most 15,000 by default, so
// the harness process stays under a 20,000 file-descriptor cap).
//
// The same 64-byte payload is sent through every broker: a JSON object
// {"t":<send time, Unix ns>,"p":"xxx…"} padded to the message size. Latency
// is the receive time minus the embedded send time, both taken in the
// harness process (one clock). Negative t marks warm-up messages that prove
// each path is live before measurement starts; they are never counted.
package compare
