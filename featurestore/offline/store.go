// Package offline is tailor's offline feature store on ClickHouse: it keeps
// the applied definitions, creates and checks the tables behind feature
// views, loads files into them atomically, and answers point-in-time
// retrievals with joins that run inside ClickHouse.
package offline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DefaultDatabase is the ClickHouse database tailor keeps its tables in.
const DefaultDatabase = "tailor"

// Store is a connection to the ClickHouse that holds tailor's state.
type Store struct {
	conn    *retryingConn
	db      string
	log     *slog.Logger
	version driver.ServerVersion
	// insertionCols remembers which external view tables have an
	// insertion-time column (table name -> bool); tailor's own always do.
	insertionCols sync.Map
	leases        *leaseKeeper
}

// Options configures Open.
type Options struct {
	// Database is where tailor's own tables live (default "tailor").
	Database string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Address, when set, is asked for ClickHouse's host:port each time a
	// connection is dialled, instead of the URL's: a server that moved
	// (a local ClickHouse restarted on other ports) is found again
	// without restarting the process.
	Address func() (string, error)
}

// ErrUnavailable marks errors caused by ClickHouse not answering.
var ErrUnavailable = errors.New("clickhouse unavailable")

// Open connects to ClickHouse at dsn (clickhouse://host:port/db?...),
// checks that it answers, and creates tailor's database and registry
// tables if they are missing.
func Open(ctx context.Context, dsn string, opt Options) (*Store, error) {
	if !strings.Contains(dsn, "://") {
		dsn = "clickhouse://" + dsn // a bare host:port means the native protocol
	}
	o, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse URL %q: %w", dsn, err)
	}
	if o.DialTimeout == 0 || o.DialTimeout > 10*time.Second {
		o.DialTimeout = 10 * time.Second
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = 16
	}
	if opt.Address != nil {
		o.DialContext = resolvingDialer(opt.Address)
	}
	s := &Store{db: opt.Database, log: opt.Logger}
	if s.db == "" {
		s.db = DefaultDatabase
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	conn, err := clickhouse.Open(o)
	if err != nil {
		return nil, fmt.Errorf("connect to clickhouse %s: %w", dsn, err)
	}
	s.conn = &retryingConn{Conn: conn, log: s.log}
	if err := s.conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, dsn, err)
	}
	v, err := conn.ServerVersion()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse server version: %w", err)
	}
	s.version = *v
	if err := s.bootstrap(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if o.Auth.Database == "" || o.Auth.Database == "default" {
		// Unqualified table names (in entity queries, say) mean tailor's
		// database, unless the URL names one.
		o.Auth.Database = s.db
		c, err := clickhouse.Open(o)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("connect to clickhouse %s: %w", dsn, err)
		}
		conn.Close()
		s.conn = &retryingConn{Conn: c, log: s.log}
	}
	// Leases keep their token and records on connections of their own, so
	// a pool full of slow queries cannot delay them.
	lo := *o
	lo.MaxOpenConns, lo.MaxIdleConns = 2, 1
	lc, err := clickhouse.Open(&lo)
	if err != nil {
		s.conn.Close()
		return nil, fmt.Errorf("connect to clickhouse %s: %w", dsn, err)
	}
	s.leases = newLeaseKeeper(&retryingConn{Conn: lc, log: s.log}, s.db, s.log)
	s.Sweep(ctx) // what dead processes left behind
	return s, nil
}

// resolvingDialer dials the address addr returns at the time of each
// dial, falling back to the URL's when it fails.
func resolvingDialer(addr func() (string, error)) func(ctx context.Context, fallback string) (net.Conn, error) {
	return func(ctx context.Context, fallback string) (net.Conn, error) {
		target := fallback
		if a, err := addr(); err == nil && a != "" {
			target = a
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}
}

// Logger is the store's structured logger.
func (s *Store) Logger() *slog.Logger { return s.log }

// Close ends the store's lease token and releases the connections; the
// tables of leases still held are dropped by the next sweep.
func (s *Store) Close() error {
	s.leases.close()
	return errors.Join(s.conn.Close(), s.leases.conn.Close())
}

// Database is the ClickHouse database holding tailor's tables.
func (s *Store) Database() string { return s.db }

// ServerVersion is the version string of the connected ClickHouse.
func (s *Store) ServerVersion() string {
	return fmt.Sprintf("%d.%d.%d", s.version.Version.Major, s.version.Version.Minor, s.version.Version.Patch)
}

// Conn exposes the underlying connection to the packages built on the store.
func (s *Store) Conn() driver.Conn { return s.conn }

func (s *Store) bootstrap(ctx context.Context) error {
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS " + QuoteIdent(s.db),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.definitions (
			version UInt64,
			digest String,
			repo_json String,
			applied_at DateTime,
			applied_by String,
			summary String,
			%s DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY version`, QuoteIdent(s.db), InsertedAtColumn),
		// One row per committed ingestion: its rows carry insertion times
		// from stored_from on, though they became visible at committed_at.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.ingest_log (
			view String,
			rows UInt64,
			stored_from DateTime,
			committed_at DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY (view, committed_at)`, QuoteIdent(s.db)),
		// One row per export: its manifest, to reproduce it later.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.snapshots (
			snapshot_id String,
			manifest String,
			created_at DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY snapshot_id`, QuoteIdent(s.db)),
		// One row per finished materialization: the watermark an
		// incremental run starts from.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.materializations (
			view String,
			stored_before DateTime,
			keys UInt64,
			finished_at DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY (view, finished_at)`, QuoteIdent(s.db)),
	}
	stmts = append(stmts, createLeasesSQL(s.db), createPushLogSQL(s.db))
	for _, q := range stmts {
		if err := s.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap tailor tables: %w", err)
		}
	}
	return nil
}

// column is one column of an existing ClickHouse table.
type tableColumn struct{ Name, Type string }

// tableColumns lists the columns of t in table order; ok is false when t
// does not exist. DESCRIBE keeps the order on every ClickHouse version
// (18.16's system.columns has no position).
func (s *Store) tableColumns(ctx context.Context, t tableRef) (cols []tableColumn, ok bool, err error) {
	var exists uint8
	if err := s.conn.QueryRow(ctx, "EXISTS TABLE "+t.String()).Scan(&exists); err != nil {
		return nil, false, fmt.Errorf("check table %s: %w", t.Plain(), err)
	}
	if exists == 0 {
		return nil, false, nil
	}
	rows, err := s.conn.Query(ctx, "DESCRIBE TABLE "+t.String())
	if err != nil {
		return nil, false, fmt.Errorf("describe %s: %w", t.Plain(), err)
	}
	defer rows.Close()
	for rows.Next() {
		vals := make([]any, len(rows.Columns()))
		var c tableColumn
		vals[0], vals[1] = &c.Name, &c.Type
		for i := 2; i < len(vals); i++ {
			vals[i] = new(string)
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, false, fmt.Errorf("describe %s: %w", t.Plain(), err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("describe %s: %w", t.Plain(), err)
	}
	return cols, true, nil
}
