// Package admin owns Gatecast's administration surface: the HTTP admin API
// (tokens, tags, permissions, live connections, the audit log, server-side
// publish, /healthz and /metrics on the admin listener), its admin key, the
// Go client of that API and the admin commands of the gatecast binary
// (token, tag, grant, revoke, conn, audit, publish), which are nothing but
// that client with flags and tables.
//
// Every write that presented the key is recorded in the store's audit log
// (audit.go) before its answer is flushed: action, target, credential
// (never the key or a secret), status and enforcement outcome.
//
// The API writes to the acl.Store and then asks an Enforcer (the broker) to
// apply the change to live sessions before it answers, so a 200 or 204
// answer means every affected session has already lost the rights it lost.
// An enforcement that outlasts Config.EnforceDeadline (or a cluster
// barrier not confirmed by every node) answers 202 pending instead: saved,
// still being enforced; it goes on in the background and completes.
//
// Every answer comes within bounded waits (write lock, store, enforcement
// deadline; see handler.go) well under the admin listener's write timeout,
// and the Client waits longer (ClientTimeout). GET /api/v1/connections is
// paged by an opaque cursor over (node, id). HostGuard, wrapped around the
// whole listener, answers only the Host headers of --admin-allowed-hosts.
// Bodies must be valid UTF-8 without lone surrogate escapes.
//
// The web console (console.go, console_session.go, the embedded files of
// console/) is served at / on the same listener: signing in with the key
// buys an in-memory, per-node session cookie that stands in for the key on
// /api (writes also need the session's X-CSRF-Token; audit actor
// "console:<id hash>"). See docs/console.md.
//
// It must not know about the network layer, sessions or topic internals: it
// sees live connections only through the Enforcer interface and
// broker.ConnectionInfo, and topic filters only through topic.ValidateFilter.
//
// Concurrency: the handler from NewHandler is called by the http.Server's
// goroutines concurrently; reads run in parallel, rights changes are
// serialized by the handler so that "read the affected tokens, write,
// enforce" is never interleaved with another change (an enforcement
// answered 202 keeps the write lock until it ends). A Client may be shared
// by goroutines. RunCLI is one invocation and keeps no state between calls.
//
// Secrets: a token's secret crosses this package exactly twice — in the
// answer to its creation (or rotation) and, for an import, in the request.
// It is hashed at once with acl.HashSecret and is never logged, stored,
// listed or echoed in an error.
package admin
