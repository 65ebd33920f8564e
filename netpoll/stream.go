package netpoll

// Raw TCP streams (ServeStream). A stream connection is the same Conn as a
// WebSocket one — accept and the fd reserve, the input limits and read
// pauses, the read budget, the outbox, the sweeper's timeouts, the registry,
// the metrics and Shutdown are shared — with the framing taken out:
//
//   - Input: the first bytes open the Session (StreamHandler.OpenStream),
//     then every turn hands it the next chunk of raw input, at most
//     readBudget bytes, as netpoll read it. The Session reassembles its
//     protocol's packets itself; netpoll never looks inside.
//   - Output: Send writes f.B as it is, through the same outbox, limits and
//     drains as WebSocket frames.
//   - Phases: until the Session calls Conn.Established, HandshakeTimeout
//     (from accept) closes the connection, like a WebSocket that never
//     upgrades; then the idle timeout (Conn.SetIdleTimeout, or the
//     server's) does. No pings are ever written.
//   - Close: no close frame. The drain writes what is queued (and
//     CloseAfter's final frame), shuts the write side (the peer reads EOF),
//     and input is skipped until the peer's EOF, CloseTimeout or
//     closeReadAllowance bytes.
//   - Inbound rate: netpoll cannot count messages, so the Session asks for
//     each one (Conn.AdmitInbound).

// openStream runs at a stream's first bytes: it opens the Session and
// delivers the first chunk. Event goroutine only.
func (c *Conn) openStream(rd byteSource) {
	h := (*c.srv.streams.Load())[c.handler-1]
	c.mode = modeStream
	c.opened(fUpgraded)
	c.handOver(h.OpenStream(c))
	c.readStream(rd)
}

// readStream hands the Session the next chunk of input, at most readBudget
// bytes; netpoll calls again at once while more remains. A closing stream
// only skips its input from then on (onRequest discards it and counts it
// against closeReadAllowance). Event goroutine only.
func (c *Conn) readStream(rd byteSource) {
	if c.sess == nil || c.flags.Load()&fClosing != 0 {
		c.mode = modeDiscard
		return
	}
	n := min(rd.Len(), readBudget)
	if n == 0 {
		return
	}
	p, _ := rd.Next(n) // zero-copy within one buffer node; netpoll's pooled copy across nodes
	c.rd.taken += n
	c.sess.OnMessage(false, p)
	if c.msgCount > 0 { // messages the Session admitted (AdmitInbound)
		c.srv.m.messagesIn.Add(float64(c.msgCount))
		c.msgCount = 0
	}
	if c.flags.Load()&fClosing != 0 {
		c.mode = modeDiscard // closed during the call: the rest of the input is skipped
	}
}
