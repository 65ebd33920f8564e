// Package mqtt is Gatecast's codec for MQTT control packets, versions
// 3.1.1 and 5.0 in one set of functions.
//
// It owns the bytes of the control packets: framing (ReadPacket), one
// decoder and one Append encoder per packet, the validity rules the specs
// state for those bytes, MQTT 5 properties and the reason codes. It must
// not know about sessions, tokens, grants, topic matching or the network:
// the broker's MQTT adapter decides what a packet means for a session.
//
// Decoded strings and byte slices are views into the caller's buffer,
// valid while it is. PUBLISH decoding and encoding allocate nothing.
package mqtt
