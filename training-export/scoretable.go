package trainingexport

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// tableSink writes scores into a staging table and swaps it in for the
// target only when every row is stored, so a failure midway leaves the
// target as it was and a rerun is safe. Its tables are named by a lease,
// so if the process dies they are dropped by the next sweep (seconds
// later), never while it lives.
type tableSink struct {
	store         *offline.Store
	db, table     string
	stage         string
	lease         *offline.Lease
	cols          []string
	created       bool
	ctx           context.Context
	schema        *arrow.Schema
	columnBuilder []func(arrow.Array) (any, error)
}

// newTableSink prepares a sink into db.table (table may be "db.name").
func newTableSink(ctx context.Context, store *offline.Store, table string) (*tableSink, error) {
	db, name := store.Database(), table
	if d, n, ok := strings.Cut(table, "."); ok {
		db, name = d, n
	}
	id := offline.NewLeaseID()
	t := &tableSink{store: store, db: db, table: name, stage: "_stage_scores_" + id, ctx: ctx}
	l, err := store.Lease(ctx, id, offline.LeaseTables, time.Time{}, offline.TableName{DB: db, Name: t.stage}, offline.TableName{DB: db, Name: t.old()})
	if err != nil {
		return nil, fmt.Errorf("score into %s: %w", table, err)
	}
	t.lease = l
	return t, nil
}

// old is the name the previous scores take while the staging table is
// swapped in.
func (t *tableSink) old() string { return t.stage + "_old" }

func (t *tableSink) ref(name string) string {
	return offline.QuoteIdent(t.db) + "." + offline.QuoteIdent(name)
}

// create makes the staging table for schema.
func (t *tableSink) create(schema *arrow.Schema) error {
	var defs []string
	for _, f := range schema.Fields() {
		typ, conv, err := chColumn(f.Type)
		if err != nil {
			return fmt.Errorf("column %q: %w", f.Name, err)
		}
		defs = append(defs, offline.QuoteIdent(f.Name)+" "+typ)
		t.cols = append(t.cols, offline.QuoteIdent(f.Name))
		t.columnBuilder = append(t.columnBuilder, conv)
	}
	defs = append(defs, "`_inserted_at` DateTime DEFAULT now()")
	if err := t.store.Conn().Exec(t.ctx, fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = MergeTree ORDER BY tuple()", t.ref(t.stage), strings.Join(defs, ", "))); err != nil {
		return fmt.Errorf("create staging table: %w", err)
	}
	t.created, t.schema = true, schema
	return nil
}

func (t *tableSink) write(rec arrow.RecordBatch) error {
	if !t.created {
		if err := t.create(rec.Schema()); err != nil {
			return err
		}
	}
	b, err := t.store.Conn().PrepareBatch(t.ctx, fmt.Sprintf("INSERT INTO %s (%s)", t.ref(t.stage), strings.Join(t.cols, ", ")))
	if err != nil {
		return err
	}
	for i, conv := range t.columnBuilder {
		vals, err := conv(rec.Column(i))
		if err != nil {
			b.Abort()
			return fmt.Errorf("column %s: %w", t.cols[i], err)
		}
		if err := b.Column(i).Append(vals); err != nil {
			b.Abort()
			return fmt.Errorf("column %s: %w", t.cols[i], err)
		}
	}
	return b.Send()
}

// commit swaps the staging table in for the target.
func (t *tableSink) commit() error {
	conn := t.store.Conn()
	var exists uint8
	if err := conn.QueryRow(t.ctx, "EXISTS TABLE "+t.ref(t.table)).Scan(&exists); err != nil {
		return err
	}
	if exists == 0 {
		return conn.Exec(t.ctx, fmt.Sprintf("RENAME TABLE %s TO %s", t.ref(t.stage), t.ref(t.table)))
	}
	if err := conn.Exec(t.ctx, fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", t.ref(t.table), t.ref(t.old()), t.ref(t.stage), t.ref(t.table))); err != nil {
		return fmt.Errorf("swap in %s.%s: %w", t.db, t.table, err)
	}
	return conn.Exec(t.ctx, "DROP TABLE IF EXISTS "+t.ref(t.old()))
}

// finish drops what is left of the staging tables (all of it when the run
// did not commit) and ends the lease; a table that cannot be dropped is
// left to the lease, and a sweep drops it once this process is gone.
func (t *tableSink) finish() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 30*time.Second)
	defer cancel()
	for _, n := range []string{t.stage, t.old()} {
		if err := t.store.Conn().Exec(ctx, "DROP TABLE IF EXISTS "+t.ref(n)); err != nil {
			return
		}
	}
	t.lease.Release(ctx)
}

// chColumn is the ClickHouse type of an output column and the conversion
// of an Arrow array to what the driver appends.
func chColumn(dt arrow.DataType) (string, func(arrow.Array) (any, error), error) {
	switch dt.ID() {
	case arrow.STRING:
		return "Nullable(String)", func(a arrow.Array) (any, error) { return nullables(a, a.(*array.String).Value), nil }, nil
	case arrow.INT64:
		return "Nullable(Int64)", func(a arrow.Array) (any, error) { return nullables(a, a.(*array.Int64).Value), nil }, nil
	case arrow.FLOAT64:
		return "Nullable(Float64)", func(a arrow.Array) (any, error) { return nullables(a, a.(*array.Float64).Value), nil }, nil
	case arrow.BOOL:
		return "Nullable(UInt8)", func(a arrow.Array) (any, error) {
			x := a.(*array.Boolean)
			return nullables(a, func(i int) uint8 {
				if x.Value(i) {
					return 1
				}
				return 0
			}), nil
		}, nil
	case arrow.TIMESTAMP:
		return "Nullable(DateTime)", func(a arrow.Array) (any, error) {
			x := a.(*array.Timestamp)
			return nullables(a, func(i int) time.Time { return time.UnixMicro(int64(x.Value(i))).UTC() }), nil
		}, nil
	}
	return "", nil, fmt.Errorf("%s columns cannot go to a ClickHouse table here", dt)
}

// nullables reads a column as the driver's nullable values: nil where the
// column is null.
func nullables[T any](a arrow.Array, value func(int) T) []*T {
	out := make([]*T, a.Len())
	for i := range out {
		if a.IsValid(i) {
			v := value(i)
			out[i] = &v
		}
	}
	return out
}
