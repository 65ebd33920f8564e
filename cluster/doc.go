// Package cluster owns the state Gatecast nodes share through Redis:
// cluster-wide connection leases (Leases) and the registry of live nodes
// (Registry). Every key a script touches lives in one Redis Cluster slot
// (hash tags), and every expiry is judged by the Redis server's clock, so
// the same code runs on a standalone Redis and on a Redis Cluster.
//
// It must not know about sessions, WebSockets or the store of record: the
// broker decides when to call it.
package cluster
