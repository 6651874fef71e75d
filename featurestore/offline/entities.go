package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// EntityColumn is one column of an uploaded entity set, carried through to
// the output of a retrieval.
type EntityColumn struct {
	// Name is the column's name in the entity file or query.
	Name string
	// Type is the column's type in the output.
	Type definitions.ValueType
	// expr reads the column from the entity table in ClickHouse.
	expr string
	// textual marks a column stored as text and converted in Go, so
	// inferred numbers keep exactly the digits of the file.
	textual bool
}

// EntitySet is an entity set uploaded to a table in ClickHouse, ready to be
// joined against feature views. Drop it when done.
type EntitySet struct {
	store   *Store
	table   tableRef
	lease   *Lease
	Columns []EntityColumn
	// Keys maps each join key present to the SQL expression reading it.
	keys map[string]string
	// TimestampColumn names the column of request timestamps.
	TimestampColumn string
	Rows            int64
	minTS, maxTS    int64
}

// EntityOptions describes how to read an entity set.
type EntityOptions struct {
	// TimestampColumn is the column of request timestamps (default "event_timestamp").
	TimestampColumn string
	// JoinKeys are the join keys the requested views need, with their types.
	JoinKeys map[string]definitions.ValueType
	// InferTypes treats text columns other than keys and the timestamp as
	// untyped (CSV) and types them where every value reads back as the same
	// text: int64, float64 (shortest form), bool (true/false), else string.
	InferTypes bool
	// BatchRows is the upload block size (default 65536).
	BatchRows int
	// Progress is called with the number of rows uploaded so far.
	Progress func(rows int64)
}

// DefaultTimestampColumn is the entity timestamp column when none is named.
const DefaultTimestampColumn = "event_timestamp"

func (o *EntityOptions) defaults() {
	if o.TimestampColumn == "" {
		o.TimestampColumn = DefaultTimestampColumn
	}
	if o.BatchRows <= 0 {
		o.BatchRows = 65536
	}
}

// Drop removes the uploaded entity table and ends its lease.
func (e *EntitySet) Drop(ctx context.Context) error {
	if e.lease == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := e.dropTables(ctx); err != nil {
		return err // the lease stays: a sweep drops them once this process is gone
	}
	e.lease.Release(ctx)
	return nil
}

// dropTables drops the tables of the set, the one it reads from and the
// one an entity query first fills.
func (e *EntitySet) dropTables(ctx context.Context) error {
	for _, t := range []tableRef{e.table, e.first()} {
		if err := e.store.conn.Exec(ctx, "DROP TABLE IF EXISTS "+t.String()); err != nil {
			return fmt.Errorf("drop entity table %s: %w", t.Plain(), err)
		}
	}
	return nil
}

// first is the table an entity query fills before its rows are numbered
// and stamped into the set's table.
func (e *EntitySet) first() tableRef { return tableRef{DB: e.table.DB, Name: e.table.Name + "_q"} }

// newEntitySet takes the lease of a new entity set and records its tables
// in it, before any of them exists.
func (s *Store) newEntitySet(ctx context.Context, tsColumn string) (*EntitySet, error) {
	id := NewLeaseID()
	set := &EntitySet{store: s, table: tableRef{DB: s.db, Name: "_entities_" + id}, keys: map[string]string{}, TimestampColumn: tsColumn, minTS: math.MaxInt64, maxTS: math.MinInt64}
	l, err := s.Lease(ctx, id, LeaseTables, time.Time{}, TableName(set.table), TableName(set.first()))
	if err != nil {
		return nil, fmt.Errorf("entity set: %w", err)
	}
	set.lease = l
	return set, nil
}

// inference tracks which types every value of a text column fits.
type inference struct{ seen, ints, floats, bools bool }

func (in *inference) observe(s string) {
	in.seen = true
	if in.ints {
		v, err := strconv.ParseInt(s, 10, 64)
		in.ints = err == nil && strconv.FormatInt(v, 10) == s
	}
	if in.floats {
		// Only text the CSV writer gives back unchanged ("0.5", not "0.50"
		// or "1.0"), so carried-through labels keep their exact digits.
		f, err := strconv.ParseFloat(s, 64)
		in.floats = err == nil && strconv.FormatFloat(f, 'g', -1, 64) == s
	}
	if in.bools {
		in.bools = s == "true" || s == "false"
	}
}

func (in *inference) result() definitions.ValueType {
	switch {
	case !in.seen:
		return definitions.String
	case in.ints:
		return definitions.Int64
	case in.floats:
		return definitions.Float64
	case in.bools:
		return definitions.Bool
	}
	return definitions.String
}

// labelType maps an Arrow column type to the type it is carried through as.
func labelType(t arrow.DataType) (definitions.ValueType, bool) {
	switch t.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32:
		return definitions.Int32, true
	case arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return definitions.Int64, true
	case arrow.FLOAT32:
		return definitions.Float32, true
	case arrow.FLOAT64:
		return definitions.Float64, true
	case arrow.STRING, arrow.LARGE_STRING:
		return definitions.String, true
	case arrow.BOOL:
		return definitions.Bool, true
	case arrow.TIMESTAMP, arrow.DATE32, arrow.DATE64:
		return definitions.Timestamp, true
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST:
		elem := t.(arrow.ListLikeType).Elem()
		switch elem.ID() {
		case arrow.FLOAT32:
			return definitions.ArrayFloat32, true
		case arrow.INT64, arrow.INT32, arrow.INT16, arrow.INT8:
			return definitions.ArrayInt64, true
		case arrow.STRING, arrow.LARGE_STRING:
			return definitions.ArrayString, true
		}
	}
	return "", false
}

func timeMicrosAt(arr arrow.Array, i int) (int64, error) {
	switch a := arr.(type) {
	case *array.Timestamp:
		return a.Value(i).ToTime(a.DataType().(*arrow.TimestampType).Unit).UnixMicro(), nil
	case *array.Date32:
		return a.Value(i).ToTime().UnixMicro(), nil
	case *array.Date64:
		return a.Value(i).ToTime().UnixMicro(), nil
	}
	return 0, badCell(arr, i, "not a timestamp")
}

// UploadEntities reads an entity set from src into a new table in
// ClickHouse. Join keys are typed as their entities declare, the timestamp
// column is parsed, and every other column is carried through. Bad cells
// are errors naming name, the row, the column and the value.
func (s *Store) UploadEntities(ctx context.Context, name string, src RecordSource, opt EntityOptions) (_ *EntitySet, err error) {
	opt.defaults()
	schema := src.Schema()
	set, err := s.newEntitySet(ctx, opt.TimestampColumn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = set.Drop(ctx)
		}
	}()

	type upload struct {
		chName, chType string
		src            int
		buf            column
		infer          *inference
	}
	tsIndex := -1
	var cols []upload
	inferred := map[int]*inference{} // by index in set.Columns
	ddl := []string{"__tailor_row UInt64", "__tailor_ts DateTime"}
	for i, f := range schema.Fields() {
		chName := fmt.Sprintf("c%d", i)
		if f.Name == opt.TimestampColumn {
			tsIndex = i
			set.Columns = append(set.Columns, EntityColumn{Name: f.Name, Type: definitions.Timestamp, expr: "toNullable(toInt64(__tailor_ts) * 1000000)"})
			continue
		}
		if kt, ok := opt.JoinKeys[f.Name]; ok {
			cols = append(cols, upload{chName: chName, chType: chKeyType(kt), src: i, buf: newColumn(kt, true)})
			set.keys[f.Name] = chName
			set.Columns = append(set.Columns, EntityColumn{Name: f.Name, Type: kt, expr: "toNullable(" + chName + ")"})
			continue
		}
		if opt.InferTypes && (f.Type.ID() == arrow.STRING || f.Type.ID() == arrow.LARGE_STRING) {
			in := &inference{ints: true, floats: true, bools: true}
			inferred[len(set.Columns)] = in
			cols = append(cols, upload{chName: chName, chType: "Nullable(String)", src: i, buf: newColumn(definitions.String, false), infer: in})
			set.Columns = append(set.Columns, EntityColumn{Name: f.Name, expr: chName, textual: true})
			continue
		}
		lt, ok := labelType(f.Type)
		if !ok {
			return nil, fmt.Errorf("%s: column %q has type %s, which cannot be carried through (use numbers, strings, booleans, timestamps or lists of them)", name, f.Name, f.Type)
		}
		u := upload{chName: chName, chType: chType(lt), src: i, buf: newColumn(lt, false)}
		expr := chName
		if !lt.IsArray() {
			expr = "toNullable(" + chName + ")"
		}
		if lt == definitions.Timestamp {
			u.chType, u.buf = "Nullable(Int64)", &nullable[int64]{conv: timeMicrosAt}
		}
		cols = append(cols, u)
		set.Columns = append(set.Columns, EntityColumn{Name: f.Name, Type: lt, expr: expr})
	}
	if tsIndex < 0 {
		return nil, &SchemaError{File: name, Problems: []string{fmt.Sprintf("no timestamp column %q (name it with --timestamp-column)", opt.TimestampColumn)}}
	}
	var missing []string
	for k := range opt.JoinKeys {
		if _, ok := set.keys[k]; !ok {
			missing = append(missing, fmt.Sprintf("%q", k))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, &SchemaError{File: name, Problems: []string{"missing join key column(s) " + strings.Join(missing, ", ") + " needed by the requested feature views"}}
	}
	for _, c := range cols {
		ddl = append(ddl, c.chName+" "+c.chType)
	}
	if err := s.conn.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Memory", set.table, strings.Join(ddl, ", "))); err != nil {
		return nil, fmt.Errorf("upload entities: create table: %w", err)
	}

	names := []string{"__tailor_row", "__tailor_ts"}
	for _, c := range cols {
		names = append(names, c.chName)
	}
	insert := fmt.Sprintf("INSERT INTO %s (%s)", set.table, strings.Join(names, ", "))
	rowIDs := make([]uint64, 0, opt.BatchRows)
	stamps := &required[time.Time]{conv: timeAt}
	var pending int
	send := func() error {
		if pending == 0 {
			return nil
		}
		b, err := s.conn.PrepareBatch(ctx, insert)
		if err != nil {
			return fmt.Errorf("upload entities: %w", err)
		}
		if err := b.Column(0).Append(rowIDs); err != nil {
			return fmt.Errorf("upload entities: %w", err)
		}
		if err := b.Column(1).Append(stamps.take()); err != nil {
			return fmt.Errorf("upload entities: %w", err)
		}
		for i, c := range cols {
			if err := b.Column(i + 2).Append(c.buf.take()); err != nil {
				return fmt.Errorf("upload entities: column %s: %w", schema.Field(c.src).Name, err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("upload entities: %w", err)
		}
		rowIDs, pending = rowIDs[:0], 0
		if opt.Progress != nil {
			opt.Progress(set.Rows)
		}
		return nil
	}
	for {
		rec, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &SourceError{Name: name, Err: err}
		}
		n := int(rec.NumRows())
		tsCol := rec.Column(tsIndex)
		for i := 0; i < n; i++ {
			row := set.Rows + 1
			if tsCol.IsNull(i) {
				rec.Release()
				return nil, &CellError{File: name, Row: row, Column: opt.TimestampColumn, Msg: errNullRequired.Error()}
			}
			if err := stamps.add(tsCol, i); err != nil {
				err = cellError(name, row, target{name: opt.TimestampColumn, src: tsIndex}, rec, i, err)
				rec.Release()
				return nil, err
			}
			ts := stamps.vals[len(stamps.vals)-1].Unix()
			set.minTS, set.maxTS = min(set.minTS, ts), max(set.maxTS, ts)
			for _, c := range cols {
				col := rec.Column(c.src)
				var err error
				if col.IsNull(i) {
					err = c.buf.addNull()
				} else {
					if c.infer != nil {
						s, _ := stringAt(col, i)
						c.infer.observe(s)
					}
					err = c.buf.add(col, i)
				}
				if err != nil {
					err = cellError(name, row, target{name: schema.Field(c.src).Name, src: c.src}, rec, i, err)
					rec.Release()
					return nil, err
				}
			}
			rowIDs = append(rowIDs, uint64(set.Rows))
			set.Rows++
			pending++
			if pending >= opt.BatchRows {
				if err := send(); err != nil {
					rec.Release()
					return nil, err
				}
			}
		}
		rec.Release()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if err := send(); err != nil {
		return nil, err
	}
	// Inferred types are known only once every value was seen.
	for i, in := range inferred {
		set.Columns[i].Type = in.result()
	}
	return set, nil
}

// EntitiesFromSQL runs query in ClickHouse and keeps its result as the
// entity set, in the query's row order, without passing rows through Go.
func (s *Store) EntitiesFromSQL(ctx context.Context, query string, opt EntityOptions) (_ *EntitySet, err error) {
	opt.defaults()
	set, err := s.newEntitySet(ctx, opt.TimestampColumn)
	if err != nil {
		return nil, err
	}
	// ClickHouse creates a table before it fills it: a query that fails or
	// is cancelled midway leaves a partial table, dropped here.
	defer func() {
		if err != nil {
			_ = set.Drop(ctx)
		}
	}()
	query = strings.TrimRight(strings.TrimSpace(query), ";")
	first := set.first()
	// One thread keeps the query's order in the row numbers.
	create := fmt.Sprintf("CREATE TABLE %s ENGINE = Memory AS SELECT rowNumberInAllBlocks() AS __tailor_row, * FROM (%s)", first, query)
	one := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_threads": 1}))
	if err := s.conn.Exec(one, create); err != nil {
		return nil, &QueryError{Query: query, Err: err}
	}
	cols, _, err := s.tableColumns(ctx, first)
	if err != nil {
		return nil, err
	}
	var problems []string
	hasTS := false
	for _, c := range cols[1:] {
		q := QuoteIdent(c.Name)
		if c.Name == opt.TimestampColumn {
			if !timestampCompatible(c.Type) && unwrapCH(c.Type) != "Date" {
				problems = append(problems, fmt.Sprintf("timestamp column %q is %s, not DateTime", c.Name, c.Type))
			}
			hasTS = true
			set.Columns = append(set.Columns, EntityColumn{Name: c.Name, Type: definitions.Timestamp, expr: "toNullable(toInt64(__tailor_ts) * 1000000)"})
			continue
		}
		if kt, ok := opt.JoinKeys[c.Name]; ok {
			if !compatible(kt, c.Type) {
				problems = append(problems, fmt.Sprintf("join key column %q is %s, which cannot hold %s keys", c.Name, c.Type, kt))
				continue
			}
			if strings.HasPrefix(c.Type, "Nullable(") {
				problems = append(problems, fmt.Sprintf("join key column %q is %s: keys cannot be null (wrap it in assumeNotNull or filter nulls)", c.Name, c.Type))
				continue
			}
			expr := "toInt64(" + q + ")"
			if kt == definitions.String {
				expr = "toString(" + q + ")"
			}
			set.keys[c.Name] = expr
			set.Columns = append(set.Columns, EntityColumn{Name: c.Name, Type: kt, expr: "toNullable(" + expr + ")"})
			continue
		}
		lt, expr, ok := sqlLabel(q, c.Type)
		if !ok {
			problems = append(problems, fmt.Sprintf("column %q has type %s, which cannot be carried through", c.Name, c.Type))
			continue
		}
		set.Columns = append(set.Columns, EntityColumn{Name: c.Name, Type: lt, expr: expr})
	}
	if !hasTS {
		problems = append(problems, fmt.Sprintf("no timestamp column %q (name it with --timestamp-column)", opt.TimestampColumn))
	}
	for k := range opt.JoinKeys {
		if _, ok := set.keys[k]; !ok && !containsCol(cols, k) {
			problems = append(problems, fmt.Sprintf("missing join key column %q needed by the requested feature views", k))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, &SchemaError{File: "--entities-sql", Problems: problems}
	}
	// Keep the request timestamp in a fixed column so the join reads it the
	// same way for files and queries.
	alter := fmt.Sprintf("CREATE TABLE %s ENGINE = Memory AS SELECT *, toDateTime(%s) AS __tailor_ts FROM %s ORDER BY __tailor_row", set.table, QuoteIdent(opt.TimestampColumn), first)
	if err := s.conn.Exec(ctx, alter); err != nil {
		return nil, fmt.Errorf("entity set: %w", err)
	}
	if err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+first.String()); err != nil {
		return nil, fmt.Errorf("entity set: %w", err)
	}
	var nulls uint64
	row := s.conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), toInt64(min(__tailor_ts)), toInt64(max(__tailor_ts)), countIf(isNull(%s)) FROM %s", QuoteIdent(opt.TimestampColumn), set.table))
	var n uint64
	if err := row.Scan(&n, &set.minTS, &set.maxTS, &nulls); err != nil {
		return nil, fmt.Errorf("entity set: %w", err)
	}
	if nulls > 0 {
		return nil, &SchemaError{File: "--entities-sql", Problems: []string{fmt.Sprintf("timestamp column %q is null in %d row(s)", opt.TimestampColumn, nulls)}}
	}
	set.Rows = int64(n)
	return set, nil
}

func containsCol(cols []tableColumn, name string) bool {
	for _, c := range cols {
		if c.Name == name {
			return true
		}
	}
	return false
}

// sqlLabel maps a ClickHouse result column to the type it is carried
// through as and the expression that reads it in canonical form.
func sqlLabel(q, t string) (definitions.ValueType, string, bool) {
	h := unwrapCH(t)
	switch {
	case h == "Int8" || h == "Int16" || h == "Int32" || h == "UInt8" || h == "UInt16":
		return definitions.Int32, "toNullable(toInt32(" + q + "))", true
	case h == "Int64" || h == "UInt32" || h == "UInt64":
		return definitions.Int64, "toNullable(toInt64(" + q + "))", true
	case h == "Float32":
		return definitions.Float32, "toNullable(" + q + ")", true
	case h == "Float64":
		return definitions.Float64, "toNullable(" + q + ")", true
	case h == "String" || strings.HasPrefix(h, "FixedString("):
		return definitions.String, "toNullable(toString(" + q + "))", true
	case h == "Bool":
		return definitions.Bool, "toNullable(toUInt8(" + q + "))", true
	case h == "Date" || h == "DateTime" || strings.HasPrefix(h, "DateTime("):
		return definitions.Timestamp, "toNullable(toInt64(toDateTime(" + q + ")) * 1000000)", true
	case h == "Array(Float32)":
		return definitions.ArrayFloat32, q, true
	case h == "Array(Int64)" || h == "Array(Int32)" || h == "Array(UInt32)":
		return definitions.ArrayInt64, "arrayMap(x -> toInt64(x), " + q + ")", true
	case h == "Array(String)":
		return definitions.ArrayString, q, true
	}
	return "", "", false
}

// QueryError is an entity query ClickHouse refused.
type QueryError struct {
	Query string
	Err   error
}

func (e *QueryError) Error() string { return fmt.Sprintf("entity query failed: %v", e.Err) }
func (e *QueryError) Unwrap() error { return e.Err }

// InvalidInput marks a query ClickHouse refused as the caller's mistake,
// unless ClickHouse could not be reached to run it.
func (e *QueryError) InvalidInput() bool { return !IsUnavailable(e.Err) }

// TimeRange is the earliest and latest request timestamp of the entity
// rows (zero times for an empty set).
func (e *EntitySet) TimeRange() (earliest, latest time.Time) {
	if e.Rows == 0 || e.minTS > e.maxTS {
		return time.Time{}, time.Time{}
	}
	return time.Unix(e.minTS, 0).UTC(), time.Unix(e.maxTS, 0).UTC()
}
