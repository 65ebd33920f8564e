// Package grafana owns Gatecast's Grafana dashboards (dashboards/*.json), the
// Grafana provisioning files (provisioning/) and the tests that keep them
// honest: every metric a panel names must be one a real node exports, and
// every panel query must return data from a real Prometheus scraping a real
// node.
//
// The package has no Go API; it exists for its files and tests. It must not
// know the broker's internals: the tests see a node only through what an
// operator sees (its /metrics output, its admin API and WebSocket clients).
package grafana
