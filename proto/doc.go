// Package proto owns Gatecast's wire codecs: turning payload bytes into
// (topic, message) pairs and messages into ready-to-write frames. Today that
// is the seed-compatible JSON protocol ({"tag": ..., "message": ...} in
// WebSocket text frames), its handshake fields (Authorization secret, tag
// list, browser query string) and the shared, reference-counted Frame that
// carries one encoded message to every subscriber.
//
// The codecs are pure functions over byte slices and allocate nothing in
// steady state, because they sit on the per-message hot path. The package
// must not know about sessions, tokens, permissions, the network or topic
// matching rules: it only says what the bytes mean. Whether a topic is
// well-formed, who may publish to it and which close code answers a bad
// handshake are decided by the topic and broker packages.
//
// WebSocket frame headers follow RFC 6455 through github.com/gobwas/ws
// types; control frames (close, ping, pong) are built with gobwas/ws itself
// (ws.CompileFrame, ws.NewCloseFrameBody, ws.CompiledPing …), not here.
package proto
