package offline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// A lease is how a process tells the others what it owns while it lives:
// a running ingestion (whose staged rows hold snapshot watermarks back)
// or temporary tables (staging, entity sets, scores). Leases are rows of
// the leases table naming their holder; the holder is alive exactly while
// its token, a query that never ends, runs in ClickHouse on a connection
// of its own (system.processes lists it by its query id). A process that
// dies closes its connections, ClickHouse ends the token within a fraction
// of a second, and at once its ingestions stop holding watermarks back
// and the next sweep drops its tables. No clock and no renewal interval
// decides who is dead, so a slow or busy process is never taken for dead.
//
// A holder whose token ends while it lives (the server restarted, or an
// administrator killed the query) may have been judged dead meanwhile:
// its leases are marked lost, and an ingestion holding one refuses to
// publish (ErrLeaseLost) instead of changing snapshots already taken.

// Lease kinds.
const (
	// LeaseIngest is a running ingestion: its rows carry insertion times
	// from the lease's stored_from on.
	LeaseIngest = "ingest"
	// LeaseTables covers temporary tables: staging, entity sets, scores.
	LeaseTables = "tables"
)

// tokenPrefix starts the query id of every holder's token: the prefix,
// the holder (16 hex digits), a dot and the run's number.
const tokenPrefix = "tailor-lease-holder-"

// liveHolders is the SQL listing the holders whose token runs now.
var liveHolders = fmt.Sprintf("(SELECT substring(query_id, %d, 16) FROM system.processes WHERE startsWith(query_id, '%s'))", len(tokenPrefix)+1, tokenPrefix)

// leaseHistory is how long lease rows are kept.
const leaseHistory = 7 * 24 * time.Hour

func createLeasesSQL(db string) string {
	// Two rows per lease: taken (with the tables it owns), and released.
	// Partitioned by day so old days are dropped whole; ordered by kind
	// so that the running ingestions are found without a scan.
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.leases (
		id String,
		holder String,
		kind String,
		objects Array(String),
		stored_from DateTime,
		released UInt8,
		at DateTime DEFAULT now()
	) ENGINE = MergeTree PARTITION BY toYYYYMMDD(at) ORDER BY (kind, id, at)`, QuoteIdent(db))
}

// sweepWindow is how far back a sweep looks for leases of dead
// processes; a lease older than that whose holder died unseen is left to
// the rule for tables no lease names, once its rows age out.
const sweepWindow = 2 * 24 * time.Hour

// ErrLeaseLost is work whose lease ClickHouse may have judged dead while
// it ran (its holder's token ended): an ingestion refuses to publish rows
// that snapshots taken meanwhile did not wait for.
var ErrLeaseLost = errors.New("this process's lease was lost while it ran (ClickHouse ended its liveness query)")

// Lease is a lease this process holds. Release it when its work is done;
// one not released ends with the process.
type Lease struct {
	// ID names the lease; temporary tables carry it in their names.
	ID       string
	kind     string
	from     time.Time
	k        *leaseKeeper
	lost     atomic.Bool
	released atomic.Bool
}

// leaseKeeper runs the store's token and records its leases, on
// connections of its own so that a pool full of slow queries cannot
// delay either.
type leaseKeeper struct {
	conn   *retryingConn
	table  string
	holder string
	log    *slog.Logger

	runs int // token runs so far, numbering their query ids

	mu        sync.Mutex
	held      map[string]*Lease
	housekept time.Time     // when a sweep last did the slower work
	lastErr   error         // why the token last ended
	running   chan struct{} // closed when the token is confirmed running
	stop      context.CancelFunc
	done      chan struct{}
}

func newLeaseKeeper(conn *retryingConn, db string, log *slog.Logger) *leaseKeeper {
	return &leaseKeeper{conn: conn, table: QuoteIdent(db) + ".leases", holder: randomHex(8), log: log, held: map[string]*Lease{}}
}

// NewLeaseID returns the id of a lease about to be taken, so that the
// tables it will own can be named after it.
func NewLeaseID() string { return randomHex(8) }

// TableName names a table a lease owns.
type TableName struct{ DB, Name string }

// Lease takes lease id (from NewLeaseID) of kind (LeaseIngest or
// LeaseTables), owning tables: a sweep drops them once the holder is
// gone, so take the lease before creating them. For an ingestion,
// storedFrom is when its rows start being stored. It returns once
// ClickHouse sees the lease alive.
func (s *Store) Lease(ctx context.Context, id, kind string, storedFrom time.Time, tables ...TableName) (*Lease, error) {
	l := &Lease{ID: id, kind: kind, from: storedFrom, k: s.leases}
	if err := s.leases.hold(ctx, l); err != nil {
		return nil, fmt.Errorf("take a lease: %w", err)
	}
	objects := make([]string, len(tables))
	for i, t := range tables {
		objects[i] = tableRef(t).String()
	}
	if err := s.leases.insert(ctx, l, objects, 0); err != nil {
		l.k.drop(l)
		return nil, fmt.Errorf("take a lease: %w", err)
	}
	return l, nil
}

// Held reports whether ClickHouse has seen the lease alive all along
// since it was taken.
func (l *Lease) Held() bool { return !l.lost.Load() && !l.released.Load() }

// Release ends the lease. Call it once the lease's tables are dropped; if
// they could not be, do not release it: the sweep drops them once the
// process is gone.
func (l *Lease) Release(ctx context.Context) {
	if l.released.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.k.insert(ctx, l, nil, 1); err != nil {
		l.k.log.Warn("release lease (it ends with the process)", "lease", l.ID, "err", err)
	}
	l.k.drop(l)
}

// insert records an event of a lease this process holds.
func (k *leaseKeeper) insert(ctx context.Context, l *Lease, objects []string, released uint8) error {
	return k.record(ctx, l.ID, k.holder, l.kind, l.from, objects, released)
}

// record writes one row of the leases table.
func (k *leaseKeeper) record(ctx context.Context, id, holder, kind string, from time.Time, objects []string, released uint8) error {
	b, err := k.conn.PrepareBatch(ctx, "INSERT INTO "+k.table+" (id, holder, kind, objects, stored_from, released)")
	if err != nil {
		return err
	}
	if objects == nil {
		objects = []string{}
	}
	if err := b.Append(id, holder, kind, objects, time.Unix(max(from.Unix(), 0), 0).UTC(), released); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

// hold adds l to the held leases, starting the token if it is not
// running, and waits until ClickHouse runs it.
func (k *leaseKeeper) hold(ctx context.Context, l *Lease) error {
	k.mu.Lock()
	k.held[l.ID] = l
	if k.stop == nil {
		tctx, stop := context.WithCancel(context.Background())
		k.stop, k.done, k.running = stop, make(chan struct{}), make(chan struct{})
		go k.token(tctx, k.done)
	}
	running := k.running
	k.mu.Unlock()
	timer := time.NewTimer(tokenStartTimeout)
	defer timer.Stop()
	select {
	case <-running:
		return nil
	case <-ctx.Done():
		k.drop(l)
		return ctx.Err()
	case <-timer.C:
		k.drop(l)
		k.mu.Lock()
		err := k.lastErr
		k.mu.Unlock()
		return fmt.Errorf("%w: the lease token did not start in %s: %v", ErrUnavailable, tokenStartTimeout, err)
	}
}

// tokenStartTimeout bounds how long taking a lease waits for the token to
// run (ClickHouse down, say).
const tokenStartTimeout = 10 * time.Second

// drop forgets l; the token stops with the last lease.
func (k *leaseKeeper) drop(l *Lease) {
	k.mu.Lock()
	delete(k.held, l.ID)
	var stop context.CancelFunc
	var done chan struct{}
	if len(k.held) == 0 && k.stop != nil {
		stop, done = k.stop, k.done
		k.stop, k.done, k.running = nil, nil, nil
	}
	k.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// close stops the token. Leases still held (their work did not finish
// cleanly) are not released: the next sweep drops their tables, as for a
// process that died.
func (k *leaseKeeper) close() {
	k.mu.Lock()
	stop, done := k.stop, k.done
	k.stop, k.done, k.running = nil, nil, nil
	k.held = map[string]*Lease{}
	k.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// token runs the holder's liveness query until ctx ends. Each run closes
// the keeper's running channel once ClickHouse runs it, and leases wait
// on that channel before they are recorded. If a run ends on its own, the
// leases held then are lost (ClickHouse may have judged them dead), a new
// running channel makes new leases wait, and it runs again.
func (k *leaseKeeper) token(ctx context.Context, done chan struct{}) {
	defer close(done)
	for ctx.Err() == nil {
		k.mu.Lock()
		running := k.running
		k.mu.Unlock()
		ran := false
		err := k.runToken(ctx, func() {
			ran = true
			close(running)
		})
		if ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		n := 0
		if ran {
			for _, l := range k.held {
				l.lost.Store(true)
			}
			n = len(k.held)
			k.running = make(chan struct{})
		}
		k.lastErr = err
		k.mu.Unlock()
		k.log.Warn("lease token ended; the leases held are lost", "leases", n, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runToken runs the token query (one row every 100 ms, forever), calling
// alive once ClickHouse runs it (the driver returns from Query when the
// query's header arrives). Each run has a query id of its own: the
// previous run's may still be ending.
func (k *leaseKeeper) runToken(ctx context.Context, alive func()) error {
	k.runs++
	id := fmt.Sprintf("%s%s.%d", tokenPrefix, k.holder, k.runs)
	qctx := clickhouse.Context(ctx, clickhouse.WithQueryID(id), clickhouse.WithSettings(clickhouse.Settings{
		"max_block_size": 1, "max_threads": 1, "max_execution_time": 0,
	}))
	rows, err := k.conn.Conn.Query(qctx, "SELECT sleepEachRow(0.1) FROM system.numbers")
	if err != nil {
		return err
	}
	defer rows.Close()
	alive()
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return errors.New("the token query ended")
}

// liveIngestions returns how many ingestions hold a live lease and the
// earliest time their rows were stored from.
func (s *Store) liveIngestions(ctx context.Context) (n uint64, from time.Time, err error) {
	var f uint32
	err = s.conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(), toUnixTimestamp(min(f)) FROM (
		SELECT id, any(holder) AS h, min(stored_from) AS f, max(released) AS rel
		FROM %s.leases WHERE kind = ? GROUP BY id
	) WHERE rel = 0 AND h IN %s`, QuoteIdent(s.db), liveHolders), LeaseIngest).Scan(&n, &f)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("running ingestions: %w", err)
	}
	return n, time.Unix(int64(f), 0).UTC(), nil
}

// abandonedAfter is how old a staging or entity table that no lease
// names must be before a sweep assumes its owner died (tables of tailor
// versions before leases).
const abandonedAfter = 24 * time.Hour

// Sweep drops what dead processes left behind: the tables of unreleased
// leases whose holder is gone, staging and entity tables no lease names
// once a day old, and lease history older than a week. It only logs
// failures: a leftover table costs disk, not correctness. It returns the
// tables dropped.
func (s *Store) Sweep(ctx context.Context) []string {
	var dropped []string
	rows, err := s.conn.Query(ctx, fmt.Sprintf(`SELECT id, any(holder), any(kind), groupUniqArrayArray(objects) FROM %s.leases
		WHERE at > now() - ? GROUP BY id
		HAVING max(released) = 0 AND any(holder) NOT IN %s`,
		QuoteIdent(s.db), liveHolders), int64(sweepWindow/time.Second))
	if err != nil {
		s.log.Warn("list leases of dead processes", "err", err)
		return nil
	}
	type dead struct {
		id, holder, kind string
		objects          []string
	}
	var leases []dead
	for rows.Next() {
		var d dead
		if rows.Scan(&d.id, &d.holder, &d.kind, &d.objects) == nil {
			leases = append(leases, d)
		}
	}
	rows.Close()
	for _, d := range leases {
		ok := true
		for _, obj := range d.objects {
			if obj == "" {
				continue
			}
			if err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+obj); err != nil {
				s.log.Warn("drop a table of a dead process", "lease", d.id, "table", obj, "err", err)
				ok = false
				continue
			}
			dropped = append(dropped, obj)
		}
		if ok {
			// Released on the dead holder's behalf, so later sweeps pass
			// it by.
			if err := s.leases.record(ctx, d.id, d.holder, d.kind, time.Time{}, nil, 1); err != nil {
				s.log.Warn("close a lease of a dead process", "lease", d.id, "err", err)
			}
			s.log.Info("swept the lease of a dead process", "lease", d.id, "tables", len(d.objects))
		}
	}
	if s.leases.dueForHousekeeping() {
		dropped = append(dropped, s.dropUnleased(ctx)...)
		s.dropOldLeases(ctx)
	}
	return dropped
}

// housekeepingEvery spaces the sweeps' slower work: tables no lease names,
// and old days of history.
const housekeepingEvery = time.Hour

// dueForHousekeeping reports whether a sweep should do the slower work
// now, and if so marks it done.
func (k *leaseKeeper) dueForHousekeeping() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.housekept.IsZero() && time.Since(k.housekept) < housekeepingEvery {
		return false
	}
	k.housekept = time.Now()
	return true
}

// dropUnleased drops staging and entity tables that no lease names once
// they are abandonedAfter old.
func (s *Store) dropUnleased(ctx context.Context) []string {
	rows, err := s.conn.Query(ctx, `SELECT name FROM system.tables WHERE database = ?
		AND (startsWith(name, '_stage_') OR startsWith(name, '_entities_'))
		AND metadata_modification_time < now() - ?`, s.db, int64(abandonedAfter.Seconds()))
	if err != nil {
		s.log.Warn("list abandoned tables", "err", err)
		return nil
	}
	var old []tableRef
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			old = append(old, tableRef{DB: s.db, Name: n})
		}
	}
	rows.Close()
	if len(old) == 0 {
		return nil
	}
	leased := map[string]bool{}
	rows, err = s.conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT arrayJoin(objects) FROM %s.leases", QuoteIdent(s.db)))
	if err != nil {
		s.log.Warn("list leased tables", "err", err)
		return nil
	}
	for rows.Next() {
		var o string
		if rows.Scan(&o) == nil {
			leased[o] = true
		}
	}
	rows.Close()
	var dropped []string
	for _, t := range old {
		if leased[t.String()] {
			continue // its lease decides
		}
		if err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+t.String()); err != nil {
			s.log.Warn("drop abandoned table", "table", t.Plain(), "err", err)
			continue
		}
		dropped = append(dropped, t.String())
		s.log.Info("dropped abandoned table", "table", t.Plain())
	}
	return dropped
}

// dropOldLeases drops the days of lease history older than leaseHistory,
// except days holding a lease still unreleased, and the days of the push
// log no idempotency key is remembered from.
func (s *Store) dropOldLeases(ctx context.Context) {
	s.dropOldDays(ctx, "push_log", fmt.Sprintf("toYYYYMMDD(today() - %d)", int64(pushLogWindow/(24*time.Hour))+1))
	s.dropOldDays(ctx, "leases", fmt.Sprintf(`least(toYYYYMMDD(today() - %d), (SELECT min(toYYYYMMDD(t)) FROM (
		SELECT min(at) AS t FROM %s.leases GROUP BY id HAVING max(released) = 0
		UNION ALL SELECT now() AS t)))`, int64(leaseHistory/(24*time.Hour)), QuoteIdent(s.db)))
}

// dropOldDays drops the daily partitions (YYYYMMDD) of table before the
// day the SQL expression before gives.
func (s *Store) dropOldDays(ctx context.Context, table, before string) {
	rows, err := s.conn.Query(ctx, fmt.Sprintf(`SELECT DISTINCT partition FROM system.parts
		WHERE database = ? AND table = ? AND active AND toUInt32OrZero(partition) < %s`, before), s.db, table)
	if err != nil {
		s.log.Warn("list old partitions", "table", table, "err", err)
		return
	}
	var parts []string
	for rows.Next() {
		var p string
		if rows.Scan(&p) == nil && p != "" && strings.Trim(p, "0123456789") == "" {
			parts = append(parts, p)
		}
	}
	rows.Close()
	for _, p := range parts {
		if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", QuoteIdent(s.db), QuoteIdent(table), p)); err != nil {
			s.log.Warn("drop old partition", "table", table, "partition", p, "err", err)
		}
	}
}
