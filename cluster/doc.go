// Package cluster owns the state Gatecast nodes share through Redis:
// cluster-wide connection leases (Leases), the registry of live nodes
// (Registry), the rights-change bus (Rights) and cross-node routing of
// published messages (Routes: a per-node route table of filters, confirmed
// by every node before Add returns, and one message per matching node). Every key a script touches lives in one Redis Cluster slot
// (hash tags), and every expiry is judged by the Redis server's clock, so
// the same code runs on a standalone Redis and on a Redis Cluster.
//
// It must not know about sessions, WebSockets or the store of record: the
// broker decides when to call it.
package cluster
