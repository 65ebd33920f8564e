// Package mqtt is the MQTT 3.1.1 and 5.0 adapter over the broker's
// protocol-neutral session: it turns a connection's packets into broker
// calls (Open, Subscribe, Unsubscribe, Publish) and the core's results into
// MQTT answers (CONNACK, SUBACK, PUBACK… reason codes, DISCONNECT), and it
// keeps the per-connection MQTT state: keep alive, packet identifiers, the
// QoS 1 and 2 flows in both directions, topic aliases, client identifiers
// and takeover.
//
// It owns the MQTT meaning of packets, not their bytes (proto/mqtt does)
// and not their transport: a Transport is a connection of the network layer
// (netpoll.Conn implements it) in one of two framings, a TCP byte stream or
// WebSocket binary messages; packets may span or share reads and messages.
// It must not know sockets, SQL, Redis or the seed protocol; grants, limits
// and revocation are the broker's, judged for MQTT exactly as for the seed.
//
// Concurrency: a Conn's OnMessage and OnClose are called by its transport
// serially; Deliver and End by the broker from any goroutine (publishers,
// enforcement). The session state (outbound QoS flows, queue, offline
// timers) is guarded by session.mu, which is held for O(1) work and never
// across a broker or transport call. See docs/locking.md.
package mqtt
