// Package testserver starts real, throwaway PostgreSQL and Redis servers for
// integration tests and stops them again. It owns only processes it started
// itself: every server is a direct child of the test binary, listens on a
// random 127.0.0.1 port, keeps its files in its own temporary directory, and
// is stopped by signalling exactly the PID it was given at start. It never
// looks for, signals or reuses a server it did not start (not even one on a
// default port).
//
// It must not know about Gatecast itself: it hands out addresses and DSNs,
// nothing more.
//
// # Binaries and installation
//
// The servers are Debian's: PostgreSQL from /usr/lib/postgresql/<version>/bin
// (the highest version present; initdb and postgres on PATH are used as a
// fallback) and redis-server / redis-cli from PATH (Redis 7 or later, as in
// Debian 12, for clusters: each node's bus port is chosen with
// --cluster-port). When they are missing and
// the test runs as root with apt-get available, the package installs them once
// ("apt-get update", then "apt-get install -y postgresql" or "redis-server"
// with DEBIAN_FRONTEND=noninteractive), serialised across parallel test
// binaries by an flock on $TMPDIR/gatecast-testserver-apt.lock. `make test`
// runs as root in CI, so there it installs instead of skipping. When the
// binaries are missing and cannot be installed (not root, or no apt-get) the
// test is skipped with a message saying what to install — unless the
// environment variable CI is set (and not "false"), in which case the skip
// becomes a failure so CI never passes by skipping. A failed installation is
// always a failure.
//
// PostgreSQL refuses to run as root. When the tests run as root, initdb and
// postgres run as the "postgres" OS user (set through the child's process
// credentials) in a temporary directory chowned to that user.
//
// # Lifetimes
//
// Postgres, StartPostgres, Redis, StartRedis, RedisCluster and
// StartRedisCluster start servers that belong to one test: t.Cleanup stops
// them and removes their directory. PostgresDB instead creates a fresh,
// uniquely named database on ONE server shared by the whole test binary
// (initdb and start-up are paid once); that server is stopped by Main, which
// a package using PostgresDB must call from its TestMain:
//
//	func TestMain(m *testing.M) { testserver.Main(m) }
//
// As a safety net for a test binary that dies without running its cleanups
// (a panic, a -timeout), every server is started with a parent-death signal,
// so the kernel stops it when the test binary exits; the directories such a
// crash leaves behind are removed by the next run once neither the test binary
// nor the servers recorded in them are alive.
//
// # Outages
//
// StartPostgres, StartRedis and StartRedisCluster return handles whose Stop,
// Start, Restart (and, for Redis, Kill) simulate outages: Stop returns once
// the process has exited and its port is free; Start brings the server back
// on the same port. PostgreSQL keeps its data across a restart; Redis runs
// without persistence, so a restarted Redis is empty (a cluster node keeps its
// identity and slots through its nodes.conf).
//
// # Concurrency
//
// All functions are safe to call from parallel tests. The methods of one
// *PostgresServer or *RedisServer (Stop, Start, Restart, Kill, PID) must not
// be called concurrently with each other; different servers are independent.
package testserver
