// Package cluster owns the state Gatecast nodes share through Redis:
// cluster-wide connection leases (Leases), the registry of live nodes
// (Registry), the rights-change bus and the versioned rights projection
// (Rights), the revocation barrier (Barrier) and cross-node routing of
// published messages (Routes: a per-node route table of filters, confirmed
// by every node before Add returns, and each message sent once to each
// matching node). Every key a script touches lives in one Redis Cluster
// slot (hash tags), and every expiry is judged by the Redis server's
// clock, so the same code runs on a standalone Redis and on a Redis
// Cluster.
//
// Forwarding never puts a Redis round trip on the publisher's goroutine:
// Routes.Forward copies the message into a bounded queue per matching
// node and returns; one sender goroutine per node sends what piled up,
// several messages per SPUBLISH. Routes.Backlog tells the caller when to
// slow its publishers down; a full queue drops (counted per node).
//
// The rights projection (Rights.PutProjection, Rights.Projection) keeps
// each token's compiled rights in Redis under its secret hash, with the
// token's version in the store of record: a write never replaces a newer
// version with an older one, so writers on any node may race and re-put
// freely. Nodes read it through rueidis' client-side cache, so a token
// seen before costs no round trip and a first read costs one GET, and
// Redis' tracking invalidations tell every reader when it changed
// (OnProjection). Resets (lost invalidations) are coalesced per short
// window, so a Redis Cluster replacing one connection per master
// re-validates once or twice, not once per connection. The payload is
// opaque here; the store of record stays authoritative.
//
// It must not know about sessions, WebSockets or the store of record: the
// broker decides when to call it.
package cluster
