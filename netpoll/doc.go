// Package netpoll is Gatecast's connection core: it accepts TCP connections
// on cloudwego/netpoll event loops, without a goroutine per connection, and
// owns everything a connection costs or may do to the process — the
// open-files reserve, input limits and read pauses, the per-turn read
// budget, the bounded per-connection outbox flushed in batches (byte
// limits, backlog channel, slow-consumer policy), every network timeout
// (handshake, idle, write, close; pings), the registry, the metrics and
// graceful shutdown.
//
// On that core it offers two framings:
//
//   - WebSocket (Server.Serve): the upgrade (strict request check, gobwas
//     handshake parser, Config.Paths, Config.Subprotocols,
//     Config.CaptureHeaders), then RFC 6455 frames read and validated on
//     the event loop; a Handler opens a Session with the Handshake, and the
//     Session receives each complete text or binary message (a
//     ByteStreamSession, the consecutive binary messages of one read
//     joined in one call).
//   - Raw TCP byte streams (Server.ServeStream): no upgrade and no framing;
//     a StreamHandler opens a Session at the first bytes, the Session
//     receives raw chunks and reassembles its own packets, and tells
//     netpoll when the client is accepted (Conn.Established), what keep
//     alive it has (Conn.SetIdleTimeout) and when a message arrived
//     (Conn.AdmitInbound). See stream.go.
//
// Either way Conn.Send writes the bytes of a proto.Frame as they are (a
// complete WebSocket frame, or raw bytes), Conn.SendBytes copies bytes of a
// protocol that frames its own packets (raw on a stream, in binary
// messages of netpoll's making on a WebSocket), Conn.SendFrames copies
// whole frames the caller encoded (written as they are), and Conn.Close /
// Conn.CloseAfter end the connection (with a close frame on a WebSocket).
//
// It must not know any protocol above these framings: no topics, tokens or
// grants, no seed header names, no MQTT packets. What a Handler needs from
// the upgrade request it names in Config (paths, subprotocols, captured
// headers). The only other Gatecast package it imports is proto, for the
// shared, refcounted outgoing frame type proto.Frame.
//
// # Goroutines
//
//   - netpoll's poller goroutines accept connections and read sockets; they
//     run Server.onPrepare and netpoll's close callbacks.
//   - A connection's "event goroutine" is whichever pooled goroutine netpoll
//     starts when bytes arrive; it exists only while there is input to
//     process. Handler.Open, StreamHandler.OpenStream, Session.OnMessage and
//     Session.OnClose run there, serially per connection. An idle connection
//     has no goroutine.
//   - Writers (writers.go): one queue per core, each served by a goroutine
//     only while it has work. The first Send to an empty outbox, or a
//     Close, queues the connection's drain; a writer writes one batch of it
//     to the socket without ever waiting (a connection with more goes back
//     to the tail). When the socket does not take a whole batch, a goroutine
//     of that connection's own finishes the flush, waiting, and drains the
//     rest. At most one drain per connection runs at a time.
//   - One sweeper goroutine per Server enforces every timeout and sends pings
//     by walking a sharded registry of connections.
//   - One lag-probe goroutine per Server arms, once per
//     Config.LagProbeInterval, the timing of the next read wakeup for
//     gatecast_eventloop_lag_seconds (lag.go). It and the sweeper run from
//     the first Serve or ServeStream until Shutdown returns.
//
// Conn.Send, Conn.SendBytes, Conn.Close, Conn.CloseAfter,
// Conn.Established and Conn.SetIdleTimeout are safe from any goroutine and
// never block; Conn.AdmitInbound belongs to the event goroutine (call it
// from OnMessage).
//
// # Buffer lifetimes
//
//   - Input: netpoll reads into its per-connection LinkBuffer. A complete
//     frame is taken with Next (zero-copy when it lies in one buffer node),
//     unmasked in place and delivered; a stream's chunk is taken the same
//     way. The payload slice passed to Session.OnMessage is valid only
//     during that call, because the reader is Released when the event
//     goroutine returns.
//   - A partial frame (or partial HTTP request) is never left in netpoll's
//     buffer (netpoll re-runs OnRequest while unread input remains, which
//     would spin): its bytes are copied into a per-connection "stash" taken
//     from a size-class pool (bytedance mcache), grown only as bytes arrive,
//     bounded by MaxFrameSize (or MaxHeaderBytes), and returned to the pool
//     as soon as the frame is complete.
//   - Fragmented messages are assembled in a pooled buffer returned to the
//     pool right after the OnMessage call that delivers it.
//   - Output: Send takes one reference of a proto.Frame; SendBytes and
//     SendFrames copy the caller's bytes into chunks of the outbox's own
//     (chunk.go). The
//     drain copies the bytes of every queued frame and chunk into netpoll's
//     output buffer (one Malloc per batch, see mallocBatch) and Releases
//     each frame (frees each chunk) right after copying it, before the
//     flush. Frames and chunks still queued when a connection dies are
//     released by the close path.
//   - The upgrade request is parsed straight from netpoll's buffer (or from
//     the stash when it arrived in pieces); path, query, Authorization, the
//     headers named in Config.CaptureHeaders and Sec-WebSocket-Protocol are
//     copied into a pooled scratch that lives only until Handler.Open
//     returns.
//
// # Memory of an idle connection
//
// An idle, upgraded connection holds no I/O buffer at all: the first
// NewServer call sets netpoll's process-global BufferSize just above its
// 8 KiB page once (see tuneNetpoll), which makes netpoll drop a
// connection's input node as soon as it is read, and the drain writes each
// batch into a node netpoll drops once it is sent (mallocBatch). What
// remains is netpoll's per-connection bookkeeping (about 2.9 KiB, of which
// 1.3 KiB is its iovec barrier) and this package's Conn (320 bytes, a
// malloc size class; TestConnSizeClass keeps it there): 3400 bytes per
// connection measured at 15,000 connections, against about 12 KiB with
// netpoll's defaults. The measurement is TestIdleConnectionMemory
// (GATECAST_MEASURE_IDLE=1). A stream connection is the same Conn; its
// state is flag bits and padding, so it costs nothing more.
package netpoll
