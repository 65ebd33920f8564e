package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Query counts of a cluster's shared stores, read from the outside as an
// operator would: Redis's INFO commandstats (calls per command, per
// server) and Postgres's pg_stat_database (transactions, tuples) and
// pg_stat_statements (statement executions, when the extension is there).
// Each snapshot opens its own connection and issues a known number of
// statements, so that the reader's own queries can be taken out of the
// deltas exactly; see RedisStatsReader and PGStatsReader.

// ---- Redis ----

// redisTarget is one Redis server: host:port, or redis://[user:pass@]host:port.
type redisTarget struct {
	addr, user, pass string
}

func parseRedisAddr(s string) (redisTarget, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return redisTarget{}, fmt.Errorf("redis address %q: %w", s, err)
		}
		return redisTarget{addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis") || u.Host == "" {
		return redisTarget{}, fmt.Errorf("redis address %q: want host:port or redis://[user:password@]host:port", s)
	}
	t := redisTarget{addr: u.Host}
	if u.Port() == "" {
		t.addr = net.JoinHostPort(u.Hostname(), "6379")
	}
	if u.User != nil {
		t.user = u.User.Username()
		t.pass, _ = u.User.Password()
	}
	return t, nil
}

// respCommand encodes a command as a RESP array of bulk strings.
func respCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

// readRESP reads one reply: a simple string, an error, an integer or a
// bulk string (the replies AUTH and INFO give).
func readRESP(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("redis: empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New("redis: " + line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 || n > 64<<20 {
			return "", fmt.Errorf("redis: bad bulk length %q", line)
		}
		if n == -1 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redis: unexpected reply %q", line)
}

// redisOwnCalls is what one snapshot itself sends, by command: one INFO,
// and an AUTH when a password is set.
func (t redisTarget) ownCalls() map[string]int64 {
	m := map[string]int64{"info": 1}
	if t.pass != "" {
		m["auth"] = 1
	}
	return m
}

// commandStats reads INFO commandstats: calls per command (subcommands as
// Redis names them, "client|setinfo"). A command's own call is counted
// after it ran, so a snapshot does not see itself; the next one does.
func (t redisTarget) commandStats(ctx context.Context) (map[string]int64, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if t.pass != "" {
		args := []string{"AUTH", t.pass}
		if t.user != "" {
			args = []string{"AUTH", t.user, t.pass}
		}
		if _, err := c.Write(respCommand(args...)); err != nil {
			return nil, err
		}
		if _, err := readRESP(br); err != nil {
			return nil, err
		}
	}
	if _, err := c.Write(respCommand("INFO", "commandstats")); err != nil {
		return nil, err
	}
	info, err := readRESP(br)
	if err != nil {
		return nil, err
	}
	return parseCommandStats(info)
}

// parseCommandStats parses INFO commandstats lines
// ("cmdstat_get:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0").
func parseCommandStats(info string) (map[string]int64, error) {
	m := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if k != "calls" {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("INFO commandstats: bad line %q", line)
			}
			m[strings.TrimPrefix(name, "cmdstat_")] = n
		}
	}
	if len(m) == 0 && !strings.Contains(info, "# Commandstats") {
		return nil, errors.New("INFO commandstats: no Commandstats section")
	}
	return m, nil
}

// redisSnapshot is every server's calls per command, summed.
func redisSnapshot(ctx context.Context, ts []redisTarget) (map[string]int64, error) {
	sum := map[string]int64{}
	for _, t := range ts {
		m, err := t.commandStats(ctx)
		if err != nil {
			return nil, fmt.Errorf("redis %s: %w", t.addr, err)
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum, nil
}

// redisDelta is after − before without the snapshot before's own calls
// (which after sees), per command; zero deltas left out.
func redisDelta(before, after map[string]int64, ts []redisTarget) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	for _, t := range ts {
		for k, v := range t.ownCalls() {
			d[k] -= v
		}
	}
	for k, v := range d {
		if v == 0 {
			delete(d, k)
		}
	}
	return d
}

// ---- Postgres ----

// pgMarker names the column of the reader's own queries, so that
// pg_stat_statements' rows of them can be left out.
const pgMarker = "loadtest_stats_marker"

// pgCounts is one Postgres snapshot.
type pgCounts struct {
	XactCommit, XactRollback, TupFetched, TupReturned int64
	Statements                                        map[int64]pgStatement // pg_stat_statements of the database, by queryid; nil: unavailable
}

type pgStatement struct {
	Calls int64
	Query string
}

// pgReader reads the stats of one database. Each snapshot is its own
// connection (simple protocol: one statement, one transaction) running
// ownXacts statements; its statistics reach pg_stat_database when its
// backend exits, before the next snapshot.
type pgReader struct {
	dsn         string
	statements  bool   // pg_stat_statements can be read
	unavailable string // why not
}

// newPGReader connects once and makes pg_stat_statements available if it
// can (CREATE EXTENSION; the server must preload the library).
func newPGReader(ctx context.Context, dsn string) (*pgReader, error) {
	r := &pgReader{dsn: dsn}
	c, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var have bool
	if err := c.QueryRow(ctx, "SELECT to_regclass('pg_stat_statements') IS NOT NULL").Scan(&have); err != nil {
		return nil, err
	}
	if !have {
		if _, err := c.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			r.unavailable = "CREATE EXTENSION pg_stat_statements: " + err.Error()
			return r, nil
		}
	}
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_statements").Scan(&n); err != nil {
		r.unavailable = "pg_stat_statements: " + err.Error()
		return r, nil
	}
	r.statements = true
	return r, nil
}

func (r *pgReader) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.dsn)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.ConnectTimeout = 10 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// ownXacts is how many transactions one snapshot commits.
func (r *pgReader) ownXacts() int64 {
	if r.statements {
		return 2
	}
	return 1
}

func (r *pgReader) snapshot(ctx context.Context) (pgCounts, error) {
	var p pgCounts
	c, err := r.connect(ctx)
	if err != nil {
		return p, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	err = c.QueryRow(ctx, "SELECT xact_commit, xact_rollback, tup_fetched, tup_returned, 1 AS "+pgMarker+
		" FROM pg_stat_database WHERE datname = current_database()").Scan(&p.XactCommit, &p.XactRollback, &p.TupFetched, &p.TupReturned, new(int))
	if err != nil {
		return p, fmt.Errorf("pg_stat_database: %w", err)
	}
	if !r.statements {
		return p, nil
	}
	rows, err := c.Query(ctx, "SELECT queryid, sum(calls)::bigint, min(query) AS "+pgMarker+" FROM pg_stat_statements"+
		" WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"+
		" AND queryid IS NOT NULL AND query NOT LIKE '%"+pgMarker+"%' GROUP BY queryid")
	if err != nil {
		return p, fmt.Errorf("pg_stat_statements: %w", err)
	}
	p.Statements = map[int64]pgStatement{}
	for rows.Next() {
		var id, calls int64
		var q string
		if err := rows.Scan(&id, &calls, &q); err != nil {
			rows.Close()
			return p, err
		}
		p.Statements[id] = pgStatement{Calls: calls, Query: q}
	}
	rows.Close()
	return p, rows.Err()
}

// pgDelta is after − before without the reader's own transactions.
type pgDelta struct {
	XactCommit, XactRollback, TupFetched, TupReturned int64
	Statements                                        int64 // -1: unavailable
	Top                                               []StatementCount
}

// StatementCount is one normalized statement's executions in a window.
type StatementCount struct {
	Calls int64  `json:"calls"`
	Query string `json:"query"`
}

func (r *pgReader) delta(before, after pgCounts, top int) pgDelta {
	d := pgDelta{
		XactCommit:   after.XactCommit - before.XactCommit - r.ownXacts(),
		XactRollback: after.XactRollback - before.XactRollback,
		TupFetched:   after.TupFetched - before.TupFetched,
		TupReturned:  after.TupReturned - before.TupReturned,
		Statements:   -1,
	}
	if before.Statements == nil || after.Statements == nil {
		return d
	}
	d.Statements = 0
	for id, s := range after.Statements {
		n := s.Calls - before.Statements[id].Calls
		if n <= 0 {
			continue
		}
		d.Statements += n
		q := strings.Join(strings.Fields(s.Query), " ")
		if len(q) > 160 {
			q = q[:157] + "..."
		}
		d.Top = append(d.Top, StatementCount{Calls: n, Query: q})
	}
	sort.Slice(d.Top, func(i, j int) bool {
		if d.Top[i].Calls != d.Top[j].Calls {
			return d.Top[i].Calls > d.Top[j].Calls
		}
		return d.Top[i].Query < d.Top[j].Query
	})
	if len(d.Top) > top {
		d.Top = d.Top[:top]
	}
	return d
}
