package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// JoinKeys returns the join keys, with their types, that an entity set
// needs to retrieve refs.
func JoinKeys(repo *definitions.Repo, refs []definitions.FeatureRef) (map[string]definitions.ValueType, error) {
	keys := map[string]definitions.ValueType{}
	owner := map[string]string{}
	for _, r := range refs {
		v, ok := repo.View(r.View)
		if !ok {
			return nil, &UnknownViewError{View: r.View}
		}
		for _, e := range repo.JoinKeys(v) {
			if t, ok := keys[e.JoinKey]; ok && t != e.Type {
				return nil, fmt.Errorf("join key %q is %s for entity %q but %s for entity %q: one entity set cannot hold both", e.JoinKey, t, owner[e.JoinKey], e.Type, e.Name)
			}
			keys[e.JoinKey], owner[e.JoinKey] = e.Type, e.Name
		}
	}
	return keys, nil
}

// RetrieveOptions tunes Retrieve.
type RetrieveOptions struct {
	// FullNames names feature columns view__feature instead of feature.
	FullNames bool
	// BatchRows is the number of rows per returned record batch (default 65536).
	BatchRows int
	// ScanProgress, when set, is told how many rows ClickHouse has read so
	// far while it runs the join (cumulative).
	ScanProgress func(rowsRead uint64)
	// StoredBefore, when set, reads the views as they were at that
	// insertion-time watermark (see SnapshotWatermark): rows stored later
	// are ignored, so the answer can be reproduced.
	StoredBefore time.Time
	// Found adds, after the features, one boolean column per view read
	// (named FoundColumn(view), in order of first reference) saying
	// whether the view had a row for the entity row: what the online
	// tier calls PRESENT, as opposed to a row with null values.
	Found bool
}

// FoundColumn names the column RetrieveOptions.Found adds for view.
func FoundColumn(view string) string { return "__found__" + view }

// OutputName is the column name of a feature in a retrieval's output.
func OutputName(r definitions.FeatureRef, fullNames bool) string {
	if fullNames {
		return r.View + "__" + r.Feature
	}
	return r.Feature
}

// NameCollisionError is two output columns that would have the same name.
type NameCollisionError struct{ Name, First, Second string }

func (e *NameCollisionError) Error() string {
	return fmt.Sprintf("output column %q would hold both %s and %s: pass --full-names to name features view__feature", e.Name, e.First, e.Second)
}

// InvalidInput marks colliding output names as the caller's mistake.
func (e *NameCollisionError) InvalidInput() bool { return true }

// Retrieval streams the result of a point-in-time join as Arrow record
// batches: one row per entity row, in input order, the entity columns
// followed by the requested features.
type Retrieval struct {
	// Unversioned names the views read as they are, not as of
	// StoredBefore, because their tables have no insertion times (external
	// tables): an answer including them may change later.
	Unversioned []string

	rows   driver.Rows
	schema *arrow.Schema
	rb     *array.RecordBuilder
	sinks  []sink
	dests  []any
	batch  int
	done   bool
	sql    string
}

// Schema is the Arrow schema of every batch.
func (r *Retrieval) Schema() *arrow.Schema { return r.schema }

// SQL is the query the retrieval runs in ClickHouse.
func (r *Retrieval) SQL() string { return r.sql }

// Next returns the next batch, or io.EOF after the last.
func (r *Retrieval) Next() (arrow.RecordBatch, error) {
	if r.done {
		return nil, io.EOF
	}
	n := 0
	for n < r.batch && r.rows.Next() {
		if err := r.rows.Scan(r.dests...); err != nil {
			return nil, fmt.Errorf("read retrieval result: %w", err)
		}
		for _, s := range r.sinks {
			s.append()
		}
		n++
	}
	if n < r.batch {
		r.done = true
		if err := r.rows.Err(); err != nil {
			return nil, fmt.Errorf("point-in-time join: %w", err)
		}
		if n == 0 {
			return nil, io.EOF
		}
	}
	return r.rb.NewRecordBatch(), nil
}

// Close stops the query (cancelling it in ClickHouse if unfinished).
func (r *Retrieval) Close() error {
	r.rb.Release()
	return r.rows.Close()
}

// Retrieve runs the point-in-time join of refs against the entity set. For
// each entity row and view it picks the view's row for the same key with
// the greatest event timestamp not after the row's timestamp and, for a
// view with a ttl, not before the timestamp minus the ttl; ties go to the
// greatest created timestamp. No such row gives nulls. The join runs inside
// ClickHouse: the feature table streams through a hash of the entity set,
// and only the answer comes back.
func (s *Store) Retrieve(ctx context.Context, repo *definitions.Repo, set *EntitySet, refs []definitions.FeatureRef, opt RetrieveOptions) (*Retrieval, error) {
	if opt.BatchRows <= 0 {
		opt.BatchRows = 65536
	}
	if len(refs) == 0 {
		return nil, errors.New("no features requested")
	}
	// Output names: entity columns first, then features in request order.
	seen := map[string]string{}
	var fields []arrow.Field
	var exprs []string
	var sinks []sink
	for _, c := range set.Columns {
		seen[c.Name] = fmt.Sprintf("entity column %q", c.Name)
		fields = append(fields, arrow.Field{Name: c.Name, Type: ArrowType(c.Type), Nullable: true})
		exprs = append(exprs, c.expr)
		sinks = append(sinks, newSink(c.Type, c.textual))
	}

	// Views in order of first reference, each with its requested features.
	type viewPart struct {
		idx   int
		view  *definitions.FeatureView
		feats []definitions.FeatureRef
	}
	var parts []*viewPart
	byView := map[string]*viewPart{}
	for _, r := range refs {
		v, ok := repo.View(r.View)
		if !ok {
			return nil, &UnknownViewError{View: r.View}
		}
		f, ok := v.Feature(r.Feature)
		if !ok {
			return nil, fmt.Errorf("feature reference %q: feature view %q has no feature %q", r.View+":"+r.Feature, r.View, r.Feature)
		}
		p := byView[v.Name]
		if p == nil {
			p = &viewPart{idx: len(parts), view: v}
			byView[v.Name] = p
			parts = append(parts, p)
		}
		name := OutputName(r, opt.FullNames)
		what := fmt.Sprintf("feature %s:%s", r.View, r.Feature)
		if prev, ok := seen[name]; ok {
			return nil, &NameCollisionError{Name: name, First: prev, Second: what}
		}
		seen[name] = what
		p.feats = append(p.feats, definitions.FeatureRef{View: v.Name, Feature: f.Name, Type: f.Type})
		fields = append(fields, arrow.Field{Name: name, Type: ArrowType(f.Type), Nullable: true})
		sinks = append(sinks, newSink(f.Type, false))
		// The view's subquery returns its features as one tuple; a view
		// without a row for the entity row leaves __found at 0. Arrays
		// cannot be Nullable in ClickHouse: their sink reads the flag
		// beside them and writes null, as the online tier answers.
		val := fmt.Sprintf("tupleElement(__v%d, %d)", p.idx, len(p.feats))
		if f.Type.IsArray() {
			exprs = append(exprs, val, fmt.Sprintf("toUInt8(__found%d)", p.idx))
			sinks[len(sinks)-1] = &foundList{sink: sinks[len(sinks)-1]}
		} else {
			exprs = append(exprs, fmt.Sprintf("if(__found%d = 1, toNullable(%s), NULL)", p.idx, canonical(f.Type, val)))
		}
	}
	if opt.Found {
		for _, p := range parts {
			fields = append(fields, arrow.Field{Name: FoundColumn(p.view.Name), Type: arrow.FixedWidthTypes.Boolean})
			exprs = append(exprs, fmt.Sprintf("toNullable(toUInt8(__found%d))", p.idx))
			sinks = append(sinks, newSink(definitions.Bool, false))
		}
	}

	from := "(SELECT * FROM " + set.table.String() + ")"
	var unversioned []string
	for i, p := range parts {
		asOf := opt.StoredBefore
		if !asOf.IsZero() {
			if err := s.checkInsertionTime(ctx, p.view); errors.Is(err, ErrNoInsertionTime) {
				// Read as it is; the caller learns the answer may change.
				unversioned = append(unversioned, p.view.Name)
				asOf = time.Time{}
			} else if err != nil {
				return nil, err
			}
		}
		if p.view.Windowed() {
			sub, err := s.windowJoinSQL(repo, set, p.view, p.feats, i, asOf)
			if err != nil {
				return nil, err
			}
			from = fmt.Sprintf("(SELECT * FROM %s ANY LEFT JOIN (%s) USING __tailor_row)", from, sub)
			continue
		}
		if set.Rows > 0 && set.minTS == set.maxTS {
			// One instant for every row (a scoring run): the answer is
			// each key's latest row, joined by key.
			joined, err := s.latestJoinSQL(repo, set, p.view, p.feats, i, asOf, from)
			if err != nil {
				return nil, err
			}
			from = joined
			continue
		}
		sub, err := s.viewJoinSQL(repo, set, p.view, p.feats, i, asOf)
		if err != nil {
			return nil, err
		}
		from = fmt.Sprintf("(SELECT * FROM %s ANY LEFT JOIN (%s) USING __tailor_row)", from, sub)
	}
	query := fmt.Sprintf("SELECT %s FROM %s ORDER BY __tailor_row", strings.Join(exprs, ", "), from)

	s.log.Debug("point-in-time join", "entity_rows", set.Rows, "views", len(parts), "sql", query)
	qctx := ctx
	if opt.ScanProgress != nil {
		var read atomic.Uint64
		qctx = clickhouse.Context(ctx, clickhouse.WithProgress(func(p *clickhouse.Progress) {
			opt.ScanProgress(read.Add(p.Rows))
		}))
	}
	rows, err := s.conn.Query(qctx, query)
	if err != nil {
		return nil, fmt.Errorf("point-in-time join: %w", err)
	}
	schema := arrow.NewSchema(fields, nil)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	dests := make([]any, 0, len(exprs))
	for i, sk := range sinks {
		sk.bind(rb.Field(i))
		dests = append(dests, sk.dest())
		if fl, ok := sk.(*foundList); ok {
			dests = append(dests, &fl.found)
		}
	}
	return &Retrieval{rows: rows, schema: schema, rb: rb, sinks: sinks, dests: dests, batch: opt.BatchRows, sql: query, Unversioned: unversioned}, nil
}

// entityKeys pairs a view's join keys with the entity set's expressions
// for them: the quoted key columns, and "expr AS key" for the entity side
// of a join on them.
func entityKeys(repo *definitions.Repo, set *EntitySet, v *definitions.FeatureView) (keys, rightKeys []string, err error) {
	for _, e := range repo.JoinKeys(v) {
		expr, ok := set.keys[e.JoinKey]
		if !ok {
			return nil, nil, fmt.Errorf("entity set has no column %q, the join key of feature view %q", e.JoinKey, v.Name)
		}
		k := QuoteIdent(e.JoinKey)
		keys = append(keys, k)
		rightKeys = append(rightKeys, expr+" AS "+k)
	}
	return keys, rightKeys, nil
}

// viewJoinSQL is the subquery answering one view for every entity row: the
// view's rows (left, streamed) joined to the entity keys (right, hashed),
// time bounds applied, then the latest row per entity row by
// (event timestamp, created timestamp). Rows without a match are absent;
// the outer LEFT JOIN adds them back with __found = 0.
func (s *Store) viewJoinSQL(repo *definitions.Repo, set *EntitySet, v *definitions.FeatureView, feats []definitions.FeatureRef, idx int, storedBefore time.Time) (string, error) {
	table := s.viewTable(v)
	ts := QuoteIdent(v.Source.TimestampField)
	keys, rightKeys, err := entityKeys(repo, set, v)
	if err != nil {
		return "", err
	}
	leftCols := append([]string{}, keys...)
	order := versionExpr(v)
	leftCols = append(leftCols, ts)
	if cf := CreatedColumn(v); cf != "" {
		leftCols = append(leftCols, QuoteIdent(cf))
	}
	var vals []string
	for _, f := range feats {
		vals = append(vals, QuoteIdent(f.Feature))
		if !slices.Contains(leftCols, QuoteIdent(f.Feature)) {
			leftCols = append(leftCols, QuoteIdent(f.Feature))
		}
	}
	ttl := int64(v.TTL.Seconds())
	bounds := fmt.Sprintf("%s <= toDateTime(%d)", ts, set.maxTS)
	if !storedBefore.IsZero() {
		bounds += fmt.Sprintf(" AND %s < toDateTime(%d)", QuoteIdent(InsertedAtColumn), storedBefore.Unix())
	}
	where := ts + " <= __tailor_ts"
	if ttl > 0 {
		bounds += fmt.Sprintf(" AND %s >= toDateTime(%d)", ts, max(0, set.minTS-ttl))
		where += fmt.Sprintf(" AND toInt64(toUnixTimestamp(%s)) >= toInt64(toUnixTimestamp(__tailor_ts)) - %d", ts, ttl)
	}
	return fmt.Sprintf(
		"SELECT __tailor_row, toUInt8(1) AS __found%d, argMax(tuple(%s), %s) AS __v%d "+
			"FROM (SELECT %s FROM %s WHERE %s) "+
			"ALL INNER JOIN (SELECT __tailor_row, __tailor_ts, %s FROM %s) USING %s "+
			"WHERE %s GROUP BY __tailor_row",
		idx, strings.Join(vals, ", "), order, idx,
		strings.Join(leftCols, ", "), table, bounds,
		strings.Join(rightKeys, ", "), set.table, strings.Join(keys, ", "),
		where), nil
}

// latestJoinSQL extends from, the entity rows with the views joined so
// far, with one view for an entity set whose rows all share one instant:
// the view's latest row per key at that instant (within the ttl) is the
// answer for every entity row with that key, so the view is grouped by key
// once instead of per entity row, and joined to the rows by key. Rows
// without a match keep __found at 0, as in viewJoinSQL.
func (s *Store) latestJoinSQL(repo *definitions.Repo, set *EntitySet, v *definitions.FeatureView, feats []definitions.FeatureRef, idx int, storedBefore time.Time, from string) (string, error) {
	ts := QuoteIdent(v.Source.TimestampField)
	var keyCols, entityKeys, aliases []string
	for j, e := range repo.JoinKeys(v) {
		expr, ok := set.keys[e.JoinKey]
		if !ok {
			return "", fmt.Errorf("entity set has no column %q, the join key of feature view %q", e.JoinKey, v.Name)
		}
		alias := fmt.Sprintf("__k%d_%d", idx, j)
		aliases = append(aliases, alias)
		entityKeys = append(entityKeys, expr+" AS "+alias)
		keyCols = append(keyCols, QuoteIdent(e.JoinKey)+" AS "+alias)
	}
	order := versionExpr(v)
	var vals []string
	for _, f := range feats {
		vals = append(vals, QuoteIdent(f.Feature))
	}
	at := set.maxTS
	bounds := fmt.Sprintf("%s <= toDateTime(%d)", ts, at)
	if ttl := int64(v.TTL.Seconds()); ttl > 0 {
		bounds += fmt.Sprintf(" AND %s >= toDateTime(%d)", ts, max(0, at-ttl))
	}
	if !storedBefore.IsZero() {
		bounds += fmt.Sprintf(" AND %s < toDateTime(%d)", QuoteIdent(InsertedAtColumn), storedBefore.Unix())
	}
	return fmt.Sprintf(
		"(SELECT * FROM (SELECT *, %s FROM %s) ANY LEFT JOIN "+
			"(SELECT %s, toUInt8(1) AS __found%d, argMax(tuple(%s), %s) AS __v%d FROM %s WHERE %s GROUP BY %s) USING %s)",
		strings.Join(entityKeys, ", "), from,
		strings.Join(keyCols, ", "), idx, strings.Join(vals, ", "), order, idx, s.viewTable(v), bounds, strings.Join(aliases, ", "),
		strings.Join(aliases, ", ")), nil
}

// canonical converts a feature value read from a view table into the
// ClickHouse type its ValueType is decoded from.
func canonical(t definitions.ValueType, expr string) string {
	switch t {
	case definitions.Int32:
		return "toInt32(" + expr + ")"
	case definitions.Int64:
		return "toInt64(" + expr + ")"
	case definitions.Float64:
		return "toFloat64(" + expr + ")"
	case definitions.String:
		return "toString(" + expr + ")"
	case definitions.Bool:
		return "toUInt8(" + expr + ")"
	case definitions.Timestamp:
		return "toInt64(toUnixTimestamp(" + expr + ")) * 1000000"
	}
	return expr
}

// ArrowType is the Arrow type a value type is written as.
func ArrowType(t definitions.ValueType) arrow.DataType {
	switch t {
	case definitions.Int32:
		return arrow.PrimitiveTypes.Int32
	case definitions.Int64:
		return arrow.PrimitiveTypes.Int64
	case definitions.Float32:
		return arrow.PrimitiveTypes.Float32
	case definitions.Float64:
		return arrow.PrimitiveTypes.Float64
	case definitions.Bool:
		return arrow.FixedWidthTypes.Boolean
	case definitions.Timestamp:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case definitions.ArrayFloat32:
		return arrow.ListOf(arrow.PrimitiveTypes.Float32)
	case definitions.ArrayInt64:
		return arrow.ListOf(arrow.PrimitiveTypes.Int64)
	case definitions.ArrayString:
		return arrow.ListOf(arrow.BinaryTypes.String)
	}
	return arrow.BinaryTypes.String
}

// sink moves one scanned result column into its Arrow builder.
type sink interface {
	bind(b array.Builder)
	dest() any
	append()
}

type scalarSink[T any] struct {
	v   *T
	put func(T)
	nul func()
	mk  func(b array.Builder) (func(T), func())
}

func (s *scalarSink[T]) bind(b array.Builder) { s.put, s.nul = s.mk(b) }
func (s *scalarSink[T]) dest() any            { return &s.v }
func (s *scalarSink[T]) append() {
	if s.v == nil {
		s.nul()
		return
	}
	s.put(*s.v)
}

type listSink[T any] struct {
	v  []T
	lb *array.ListBuilder
	vb func([]T)
}

func (s *listSink[T]) dest() any { return &s.v }
func (s *listSink[T]) append() {
	s.lb.Append(true)
	s.vb(s.v)
}

func newSink(t definitions.ValueType, textual bool) sink {
	if textual {
		return textSink(t)
	}
	switch t {
	case definitions.Int32:
		return &scalarSink[int32]{mk: func(b array.Builder) (func(int32), func()) {
			x := b.(*array.Int32Builder)
			return x.Append, x.AppendNull
		}}
	case definitions.Int64:
		return &scalarSink[int64]{mk: func(b array.Builder) (func(int64), func()) {
			x := b.(*array.Int64Builder)
			return x.Append, x.AppendNull
		}}
	case definitions.Float32:
		return &scalarSink[float32]{mk: func(b array.Builder) (func(float32), func()) {
			x := b.(*array.Float32Builder)
			return x.Append, x.AppendNull
		}}
	case definitions.Float64:
		return &scalarSink[float64]{mk: func(b array.Builder) (func(float64), func()) {
			x := b.(*array.Float64Builder)
			return x.Append, x.AppendNull
		}}
	case definitions.Bool:
		return &scalarSink[uint8]{mk: func(b array.Builder) (func(uint8), func()) {
			x := b.(*array.BooleanBuilder)
			return func(v uint8) { x.Append(v != 0) }, x.AppendNull
		}}
	case definitions.Timestamp:
		return &scalarSink[int64]{mk: func(b array.Builder) (func(int64), func()) {
			x := b.(*array.TimestampBuilder)
			return func(v int64) { x.Append(arrow.Timestamp(v)) }, x.AppendNull
		}}
	case definitions.ArrayFloat32:
		return &listSink[float32]{}
	case definitions.ArrayInt64:
		return &listSink[int64]{}
	case definitions.ArrayString:
		return &listSink[string]{}
	}
	return &scalarSink[string]{mk: func(b array.Builder) (func(string), func()) {
		x := b.(*array.StringBuilder)
		return x.Append, x.AppendNull
	}}
}

func (s *listSink[T]) bind(b array.Builder) {
	s.lb = b.(*array.ListBuilder)
	switch vb := s.lb.ValueBuilder().(type) {
	case *array.Float32Builder:
		s.vb = any(func(v []float32) { vb.AppendValues(v, nil) }).(func([]T))
	case *array.Int64Builder:
		s.vb = any(func(v []int64) { vb.AppendValues(v, nil) }).(func([]T))
	case *array.StringBuilder:
		s.vb = any(func(v []string) { vb.AppendValues(v, nil) }).(func([]T))
	}
}

// foundList is an array feature's sink that writes null when its view had
// no row for the entity row (the flag scanned beside it), as the online
// tier answers NOT_FOUND, not an empty array.
type foundList struct {
	sink
	found uint8
	nul   func()
}

func (f *foundList) bind(b array.Builder) {
	f.sink.bind(b)
	f.nul = b.AppendNull
}

func (f *foundList) append() {
	if f.found == 0 {
		f.nul()
		return
	}
	f.sink.append()
}

// textSink decodes a column stored as text whose type was inferred: every
// value is known to parse.
func textSink(t definitions.ValueType) sink {
	return &scalarSink[string]{mk: func(b array.Builder) (func(string), func()) {
		switch x := b.(type) {
		case *array.Int64Builder:
			return func(s string) { v, _ := strconv.ParseInt(s, 10, 64); x.Append(v) }, x.AppendNull
		case *array.Float64Builder:
			return func(s string) { v, _ := strconv.ParseFloat(s, 64); x.Append(v) }, x.AppendNull
		case *array.BooleanBuilder:
			return func(s string) { x.Append(s == "true") }, x.AppendNull
		case *array.StringBuilder:
			return x.Append, x.AppendNull
		}
		panic(fmt.Sprintf("textSink: unexpected builder %T for %s", b, t))
	}}
}
