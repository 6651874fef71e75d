package offline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	chcolumn "github.com/ClickHouse/clickhouse-go/v2/lib/column"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// A push that fails on a broken connection may or may not have stored
// its rows: ClickHouse may have committed the insert and lost only the
// answer. Trying again blindly could store them twice, so a push asks
// what is stored first (StoredRows), and a client that retries a push
// names it with an idempotency key, recorded in the push log, so that the
// retry finds what the first attempt did.

// pushLogWindow is how long an idempotency key is remembered.
const pushLogWindow = 24 * time.Hour

func createPushLogSQL(db string) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.push_log (
		view String,
		key String,
		rows UInt64,
		created DateTime,
		digest String,
		at DateTime DEFAULT now()
	) ENGINE = MergeTree PARTITION BY toYYYYMMDD(at) ORDER BY (view, key)`, QuoteIdent(db))
}

// PushAttempt is the first push with an idempotency key.
type PushAttempt struct {
	// At is when ClickHouse recorded the attempt; its rows are stored
	// after it.
	At time.Time
	// Created is the created time the attempt gave rows that had none.
	Created int64
	Rows    int64
	// Digest identifies the attempt's rows.
	Digest string
}

// FirstPush returns the first push of view with key in the last
// pushLogWindow; ok is false when there was none.
func (s *Store) FirstPush(ctx context.Context, view, key string) (a PushAttempt, ok bool, err error) {
	var n, rows uint64
	var at, created uint32
	err = s.conn.QueryRow(ctx, fmt.Sprintf(
		"SELECT count(), toUnixTimestamp(min(at)), toUnixTimestamp(argMin(created, at)), argMin(rows, at), argMin(digest, at) FROM %s.push_log WHERE view = ? AND key = ? AND at > now() - ?",
		QuoteIdent(s.db)), view, key, int64(pushLogWindow/time.Second)).Scan(&n, &at, &created, &rows, &a.Digest)
	if err != nil {
		return PushAttempt{}, false, fmt.Errorf("read the push log: %w", err)
	}
	if n == 0 {
		return PushAttempt{}, false, nil
	}
	a.At, a.Created, a.Rows = time.Unix(int64(at), 0).UTC(), int64(created), int64(rows)
	return a, true, nil
}

// RecordPush records the first push of view with key, before its rows are
// inserted.
func (s *Store) RecordPush(ctx context.Context, view, key string, a PushAttempt) error {
	err := s.conn.Exec(Idempotent(ctx), fmt.Sprintf(
		"INSERT INTO %s.push_log (view, key, rows, created, digest) SELECT ?, ?, toUInt64(?), toDateTime(?), ?", QuoteIdent(s.db)),
		view, key, a.Rows, a.Created, a.Digest)
	if err != nil {
		return fmt.Errorf("record the push: %w", err)
	}
	return nil
}

// RowColumns names columns of a row identity and their ClickHouse types.
type RowColumns struct {
	Names, Types []string
}

// IdentityColumns are the columns that identify a row of view v in its
// table, as StoredRows compares them: the join keys, the event time and,
// when the table has one, the created time.
func IdentityColumns(repo *definitions.Repo, v *definitions.FeatureView) RowColumns {
	var cols RowColumns
	for _, e := range repo.JoinKeys(v) {
		cols.Names, cols.Types = append(cols.Names, e.JoinKey), append(cols.Types, chKeyType(e.Type))
	}
	cols.Names, cols.Types = append(cols.Names, v.Source.TimestampField), append(cols.Types, "DateTime")
	if c := CreatedColumn(v); c != "" {
		cols.Names, cols.Types = append(cols.Names, c), append(cols.Types, "DateTime")
	}
	return cols
}

// StoredRows counts the rows of table (db.name, or a view's table) stored
// at or after since whose values in cols equal one of rows (each row
// gives one value per column, of the Go type the driver takes for the
// column's type; nil for null). The rows travel as an external table, and
// nulls compare equal to nulls. A table without insertion times is
// searched whole.
func (s *Store) StoredRows(ctx context.Context, table string, cols RowColumns, rows [][]any, since time.Time) (uint64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	t := tableRef{DB: s.db, Name: table}
	if db, name, ok := strings.Cut(table, "."); ok {
		t = tableRef{DB: db, Name: name}
	}
	specs := make([]func(*ext.Table) error, len(cols.Names))
	idents := make([]string, len(cols.Names))
	for i := range cols.Names {
		specs[i] = ext.Column(fmt.Sprintf("c%d", i), chcolumn.Type(cols.Types[i]))
		idents[i] = QuoteIdent(cols.Names[i])
	}
	data, err := ext.NewTable("_tailor_rows", specs...)
	if err != nil {
		return 0, fmt.Errorf("rows to look for: %w", err)
	}
	for i, r := range rows {
		if err := data.Append(r...); err != nil {
			return 0, fmt.Errorf("row %d to look for: %w", i, err)
		}
	}
	given := make([]string, len(cols.Names))
	for i := range given {
		given[i] = fmt.Sprintf("c%d", i)
	}
	where := fmt.Sprintf("(%s) IN (SELECT %s FROM _tailor_rows)", identity(idents), identity(given))
	if cs, ok, err := s.tableColumns(ctx, t); err != nil {
		return 0, err
	} else if ok && containsCol(cs, InsertedAtColumn) {
		where += fmt.Sprintf(" AND %s >= toDateTime(%d)", QuoteIdent(InsertedAtColumn), max(since.Unix(), 0))
	}
	var n uint64
	qctx := clickhouse.Context(ctx, clickhouse.WithExternalTable(data))
	if err := s.conn.QueryRow(qctx, fmt.Sprintf("SELECT count() FROM %s WHERE %s", t, where)).Scan(&n); err != nil {
		return 0, fmt.Errorf("look for stored rows in %s: %w", t.Plain(), err)
	}
	return n, nil
}

// identity lists expressions equal for equal values of cols, nulls
// included (ClickHouse's IN never matches NULL).
func identity(cols []string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprintf("ifNull(toString(%s), '\\0')", c)
	}
	return strings.Join(parts, ", ")
}
