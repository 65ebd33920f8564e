// Package loadtest drives Gatecast from the outside, as real clients do: a
// small interactive client (gatecast sub / pub) and the fleet simulator
// (gatecast loadtest SCENARIO).
//
// It owns the simulated clients (devices, dashboards, a commander), the
// scenarios that choreograph them, the worker processes that hold their
// sockets, and the report (JSON, progress lines, SVG chart). It is an
// honest outside client: it speaks the seed protocol over the wire or, with
// --protocol mqtt, MQTT 3.1.1 or 5 over the broker's MQTT TCP listener
// (mqtt.go: the same event-loop client, packets read in place with
// proto/mqtt), and uses the admin API over HTTP; it imports proto and
// proto/mqtt (the wire codecs) and the WebSocket and netpoll libraries,
// never the broker's internals. The offline scenario (offline.go) needs
// MQTT's persistent sessions.
//
// # Event-loop client
//
// A simulated connection is a devConn (a few dozen bytes) plus the
// cloudwego/netpoll connection under it. After the WebSocket handshake
// (gobwas/ws, run by the dialing goroutine) the connection is read from
// netpoll's OnRequest callback: no goroutine waits on an idle connection,
// and netpoll's BufferSize is set just above its 8 KiB page so that an idle
// connection keeps no input or output buffer (see tuneNetpoll). Publishing
// is done by a few paced goroutines per worker, not one per connection.
//
// # Processes
//
// The parent process (RunCLI) creates tokens through the admin API, starts
// worker processes (its own executable re-run in a hidden worker mode, at
// most --per-worker connections each, so that each stays below the open
// files cap), sends them commands as JSON lines on stdin and reads progress
// ticks and results as JSON lines on stdout: counters and HdrHistogram
// snapshots, merged by the parent. The parent alone talks to the admin API
// and measures the broker process.
package loadtest
