package offline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// memSource serves prepared record batches as an offline.RecordSource.
type memSource struct {
	schema *arrow.Schema
	recs   []arrow.RecordBatch
}

func (m *memSource) Schema() *arrow.Schema { return m.schema }
func (m *memSource) Next() (arrow.RecordBatch, error) {
	if len(m.recs) == 0 {
		return nil, io.EOF
	}
	r := m.recs[0]
	m.recs = m.recs[1:]
	return r, nil
}

// table is rows of Go values (nil = null) with a column layout, turned into
// Arrow batches of up to batch rows.
type table struct {
	names []string
	types []arrow.DataType
	rows  [][]any
}

func (tb *table) source(batch int) *memSource {
	fields := make([]arrow.Field, len(tb.names))
	for i := range tb.names {
		fields[i] = arrow.Field{Name: tb.names[i], Type: tb.types[i], Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	src := &memSource{schema: schema}
	for start := 0; start < len(tb.rows); start += batch {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for _, row := range tb.rows[start:min(start+batch, len(tb.rows))] {
			for i, v := range row {
				appendValue(b.Field(i), v)
			}
		}
		src.recs = append(src.recs, b.NewRecordBatch())
		b.Release()
	}
	return src
}

func appendValue(b array.Builder, v any) {
	if v == nil {
		b.AppendNull()
		return
	}
	switch x := b.(type) {
	case *array.Int64Builder:
		x.Append(v.(int64))
	case *array.Int32Builder:
		x.Append(v.(int32))
	case *array.Float64Builder:
		x.Append(v.(float64))
	case *array.Float32Builder:
		x.Append(v.(float32))
	case *array.StringBuilder:
		x.Append(v.(string))
	case *array.BooleanBuilder:
		x.Append(v.(bool))
	case *array.TimestampBuilder:
		x.Append(arrow.Timestamp(v.(time.Time).UnixMicro()))
	case *array.ListBuilder:
		x.Append(true)
		for _, f := range v.([]float32) {
			x.ValueBuilder().(*array.Float32Builder).Append(f)
		}
	default:
		panic(fmt.Sprintf("appendValue: %T", b))
	}
}

// readAll drains a retrieval into rows of Go values (nil = null).
func readAll(t *testing.T, ret *offline.Retrieval) (names []string, rows [][]any) {
	t.Helper()
	for _, f := range ret.Schema().Fields() {
		names = append(names, f.Name)
	}
	for {
		rec, err := ret.Next()
		if errors.Is(err, io.EOF) {
			return names, rows
		}
		if err != nil {
			t.Fatalf("retrieval: %v", err)
		}
		for r := 0; r < int(rec.NumRows()); r++ {
			row := make([]any, rec.NumCols())
			for c := range row {
				row[c] = cellValue(rec.Column(c), r)
			}
			rows = append(rows, row)
		}
		rec.Release()
	}
}

func cellValue(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch x := a.(type) {
	case *array.Int64:
		return x.Value(i)
	case *array.Int32:
		return x.Value(i)
	case *array.Float64:
		return x.Value(i)
	case *array.Float32:
		return x.Value(i)
	case *array.String:
		return x.Value(i)
	case *array.Boolean:
		return x.Value(i)
	case *array.Timestamp:
		return time.UnixMicro(int64(x.Value(i))).UTC()
	case *array.List:
		s, e := x.ValueOffsets(i)
		out := []float32{}
		for j := s; j < e; j++ {
			out = append(out, x.ListValues().(*array.Float32).Value(int(j)))
		}
		return out
	}
	panic(fmt.Sprintf("cellValue: %T", a))
}

// viewRow is one stored row of a feature view in the oracle.
type viewRow struct {
	keys           []any
	event, created time.Time
	values         []any
}

// oracle answers a point-in-time lookup by scanning every row: the
// definition of DESIGN.md, written as plainly as possible.
func oracle(rows []viewRow, keys []any, t time.Time, ttl time.Duration, nFeatures int) []any {
	if best := oracleRow(rows, keys, t, ttl); best != nil {
		return best.values
	}
	return make([]any, nFeatures)
}

// oracleRow is the row the rule picks, or nil.
func oracleRow(rows []viewRow, keys []any, t time.Time, ttl time.Duration) *viewRow {
	var best *viewRow
	for i := range rows {
		r := &rows[i]
		if !reflect.DeepEqual(r.keys, keys) || r.event.After(t) {
			continue
		}
		if ttl > 0 && r.event.Before(t.Add(-ttl)) {
			continue
		}
		if best == nil || r.event.After(best.event) || (r.event.Equal(best.event) && r.created.After(best.created)) {
			best = r
		}
	}
	return best
}

const pitRepo = `
entities:
  - name: customer
    join_key: customer_id
    type: string
  - name: product
    join_key: product_id
    type: int64
feature_views:
  - name: cust
    entities: [customer]
    ttl: %s
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
      - {name: embedding, type: array<float32>}
      - {name: vip, type: bool}
      - {name: last_seen, type: timestamp}
  - name: prod
    entities: [product]
    ttl: %s
    features:
      - {name: popularity, type: float32}
      - {name: stock, type: int32}
  - name: cust_prod
    entities: [customer, product]
    ttl: %s
    features:
      - {name: views, type: int64}
`

// TestPointInTimeMatchesOracle loads random rows into three views (one
// keyed by customer, one by product with int64 keys above 2^53, one by the
// pair) and checks every exported value against the oracle: ties on the
// event time broken by created time, both TTL bounds hit exactly, ttl 0,
// null values inside rows, unknown keys and entity times before any event.
func TestPointInTimeMatchesOracle(t *testing.T) {
	ttlChoices := []string{"0", "1h", "90m", "30s"}
	for round := range 6 {
		seed := uint64(round) + 1
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			ttls := make([]string, 3)
			// Every view sees every ttl choice across the rounds: 0 (no
			// limit), whole hours, and a bound of seconds.
			for i := range ttls {
				ttls[i] = ttlChoices[(round+i)%len(ttlChoices)]
			}
			repo := parseRepo(t, map[string]string{"repo.yaml": fmt.Sprintf(pitRepo, ttls[0], ttls[1], ttls[2])})
			checkPIT(t, rng, repo)
		})
	}
}

func checkPIT(t *testing.T, rng *rand.Rand, repo *definitions.Repo) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatalf("apply: %v", err)
	}
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	customers := []string{"c1", "c2", "c3", "c4", "ç5 unicode"}
	products := []int64{1 << 53, 1<<53 + 1, 1<<62 + 3, -5, 9007199254740993}
	randTime := func() time.Time { return base.Add(time.Duration(rng.IntN(4*3600)) * time.Second) }
	maybe := func(v any) any {
		if rng.IntN(5) == 0 {
			return nil
		}
		return v
	}

	type spec struct {
		view  string
		keys  func() []any
		vals  func() []any
		names []string
		types []arrow.DataType
	}
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	specs := []spec{
		{"cust", func() []any { return []any{customers[rng.IntN(len(customers)-1)]} }, func() []any {
			return []any{maybe(rng.Int64N(100)), maybe(rng.Float64() * 1000), maybe(fmt.Sprintf("seg-%d", rng.IntN(3))),
				[]float32{rng.Float32(), float32(rng.IntN(3))}, maybe(rng.IntN(2) == 0), maybe(randTime())}
		}, []string{"customer_id", "orders", "spend", "segment", "embedding", "vip", "last_seen"},
			[]arrow.DataType{arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64, arrow.BinaryTypes.String, arrow.ListOf(arrow.PrimitiveTypes.Float32), arrow.FixedWidthTypes.Boolean, ts}},
		{"prod", func() []any { return []any{products[rng.IntN(len(products)-1)]} }, func() []any {
			return []any{maybe(rng.Float32()), maybe(int32(rng.IntN(50)))}
		}, []string{"product_id", "popularity", "stock"},
			[]arrow.DataType{arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Int32}},
		{"cust_prod", func() []any {
			return []any{customers[rng.IntN(len(customers)-1)], products[rng.IntN(len(products)-1)]}
		}, func() []any { return []any{maybe(rng.Int64N(1000))} }, []string{"customer_id", "product_id", "views"},
			[]arrow.DataType{arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64}},
	}

	stored := map[string][]viewRow{}
	for _, sp := range specs {
		nKeys := 1
		if sp.view == "cust_prod" {
			nKeys = 2
		}
		tb := &table{names: append([]string{}, sp.names[:nKeys]...), types: append([]arrow.DataType{}, sp.types[:nKeys]...)}
		tb.names = append(tb.names, "event_ts", "created_ts")
		tb.types = append(tb.types, ts, ts)
		tb.names = append(tb.names, sp.names[nKeys:]...)
		tb.types = append(tb.types, sp.types[nKeys:]...)
		used := map[string]bool{}
		for range 400 {
			keys := sp.keys()
			ev := randTime()
			if rng.IntN(3) == 0 {
				ev = base.Add(time.Duration(rng.IntN(20)) * time.Minute) // many ties on event_ts
			}
			cr := ev.Add(time.Duration(rng.IntN(4)) * time.Minute)
			id := fmt.Sprint(keys, ev, cr)
			if used[id] {
				continue // the contract leaves full ties unordered
			}
			used[id] = true
			vals := sp.vals()
			stored[sp.view] = append(stored[sp.view], viewRow{keys: keys, event: ev, created: cr, values: vals})
			row := append(append(append([]any{}, keys...), ev, cr), vals...)
			tb.rows = append(tb.rows, row)
		}
		// Several files, so the view's table has several parts.
		half := len(tb.rows) / 2
		for _, part := range [][][]any{tb.rows[:half], tb.rows[half:]} {
			p := &table{names: tb.names, types: tb.types, rows: part}
			if _, err := s.Ingest(ctx, repo, sp.view, "gen", p.source(97), offline.IngestOptions{BatchRows: 50}); err != nil {
				t.Fatalf("ingest %s: %v", sp.view, err)
			}
		}
	}

	// Entity rows: keys known and unknown, times at event times, exactly at
	// ttl bounds, a second outside them, and before any event.
	ent := &table{names: []string{"label", "customer_id", "event_timestamp", "product_id"},
		types: []arrow.DataType{arrow.PrimitiveTypes.Int64, arrow.BinaryTypes.String, ts, arrow.PrimitiveTypes.Int64}}
	ttlOf := func(v string) time.Duration { fv, _ := repo.View(v); return fv.TTL }
	for i := range 500 {
		c := customers[rng.IntN(len(customers))]
		p := products[rng.IntN(len(products))]
		var at time.Time
		switch rng.IntN(6) {
		case 0:
			at = base.Add(-time.Hour)
		case 1, 2:
			r := stored["cust"][rng.IntN(len(stored["cust"]))]
			at = r.event.Add(ttlOf("cust") + time.Duration(rng.IntN(3)-1)*time.Second)
		case 3:
			r := stored["prod"][rng.IntN(len(stored["prod"]))]
			at = r.event.Add(ttlOf("prod") + time.Duration(rng.IntN(3)-1)*time.Second)
		case 4:
			r := stored["cust_prod"][rng.IntN(len(stored["cust_prod"]))]
			at = r.event
			c, p = r.keys[0].(string), r.keys[1].(int64)
		default:
			at = randTime().Add(time.Hour)
		}
		ent.rows = append(ent.rows, []any{int64(i), c, at, p})
	}
	refs, err := repo.ResolveRefs([]string{"cust:*", "prod:popularity", "cust_prod:views", "prod:stock"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := offline.JoinKeys(repo, refs)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, ent *table) {
		t.Helper()
		set, err := s.UploadEntities(ctx, "entities", ent.source(128), offline.EntityOptions{JoinKeys: keys, BatchRows: 100})
		if err != nil {
			t.Fatalf("%s: upload entities: %v", what, err)
		}
		defer set.Drop(ctx)
		ret, err := s.Retrieve(ctx, repo, set, refs, offline.RetrieveOptions{BatchRows: 77})
		if err != nil {
			t.Fatalf("%s: retrieve: %v", what, err)
		}
		defer ret.Close()
		names, got := readAll(t, ret)
		wantNames := []string{"label", "customer_id", "event_timestamp", "product_id", "orders", "spend", "segment", "embedding", "vip", "last_seen", "popularity", "views", "stock"}
		if !reflect.DeepEqual(names, wantNames) {
			t.Fatalf("%s: columns = %v, want %v", what, names, wantNames)
		}
		if len(got) != len(ent.rows) {
			t.Fatalf("%s: got %d rows, want one per entity row (%d)", what, len(got), len(ent.rows))
		}
		mismatches := 0
		for i, er := range ent.rows {
			c, at, p := er[1], er[2].(time.Time), er[3]
			want := append([]any{}, er...)
			want = append(want, oracle(stored["cust"], []any{c}, at, ttlOf("cust"), 6)...)
			prod := oracle(stored["prod"], []any{p}, at, ttlOf("prod"), 2)
			want = append(want, prod[0])
			want = append(want, oracle(stored["cust_prod"], []any{c, p}, at, ttlOf("cust_prod"), 1)...)
			want = append(want, prod[1])
			// A null array is stored, and returned, empty; a view without
			// a row gives null, as the online tier's NOT_FOUND does.
			if want[7] == nil && oracleRow(stored["cust"], []any{c}, at, ttlOf("cust")) != nil {
				want[7] = []float32{}
			}
			if !reflect.DeepEqual(got[i], want) {
				mismatches++
				if mismatches <= 5 {
					t.Errorf("%s: row %d (customer %v, product %v, at %s):\n got  %v\n want %v", what, i, c, p, at.Format(time.RFC3339), got[i], want)
				}
			}
		}
		if mismatches > 0 {
			t.Fatalf("%s: %d of %d rows differ from the oracle", what, mismatches, len(ent.rows))
		}
	}
	check("entity rows at many instants", ent)
	// Every row at one instant, as a scoring run asks (a plan of its own):
	// a random time, then for each view with a ttl, a stored row's event
	// plus the ttl (the row just inside) and a second later (just outside).
	// Keys repeat across rows.
	instants := []time.Time{randTime()}
	for _, view := range []string{"cust", "prod", "cust_prod"} {
		if ttl := ttlOf(view); ttl > 0 {
			r := stored[view][rng.IntN(len(stored[view]))]
			instants = append(instants, r.event.Add(ttl), r.event.Add(ttl+time.Second))
		}
	}
	for _, at := range instants {
		one := &table{names: ent.names, types: ent.types}
		for i, r := range ent.rows[:200] {
			one.rows = append(one.rows, []any{int64(i), r[1], at, r[3]})
		}
		check("entity rows at one instant "+at.Format(time.RFC3339), one)
	}

	// Latest answers the same rule at one instant for whole key sets, as
	// the online tier's read-through does.
	at := base.Add(time.Duration(rng.IntN(4*3600)) * time.Second)
	keySets := map[string][][]any{
		"cust":      {{customers[0]}, {customers[1]}, {customers[2]}, {customers[3]}, {customers[4]}},
		"prod":      {{products[0]}, {products[1]}, {products[2]}, {products[3]}, {products[4]}},
		"cust_prod": {{customers[0], products[0]}, {customers[1], products[1]}, {customers[2], products[3]}, {customers[4], products[0]}},
	}
	for view, keys := range keySets {
		fv, _ := repo.View(view)
		got, err := s.Latest(ctx, repo, fv, keys, at)
		if err != nil {
			t.Fatalf("latest %s: %v", view, err)
		}
		byKey := map[string]offline.LatestRow{}
		for _, r := range got {
			byKey[fmt.Sprint(r.Keys)] = r
		}
		for _, k := range keys {
			want := oracleRow(stored[view], k, at, 0)
			r, ok := byKey[fmt.Sprint(k)]
			switch {
			case ok != (want != nil):
				t.Errorf("latest %s %v at %s: found %v, oracle found %v", view, k, at, ok, want != nil)
			case ok && (!reflect.DeepEqual(r.Values, want.values) || r.EventTS != want.event.Unix() || r.CreatedTS != want.created.Unix()):
				t.Errorf("latest %s %v at %s:\n got  %v at %d/%d\n want %v at %s/%s", view, k, at, r.Values, r.EventTS, r.CreatedTS, want.values, want.event, want.created)
			}
		}
	}

	// ScanLatest visits every key with a row at the instant, optionally
	// only those whose latest row falls in an event-time window.
	for view := range keySets {
		fv, _ := repo.View(view)
		window := [2]time.Time{base.Add(time.Hour), base.Add(2 * time.Hour)}
		for _, win := range [][2]time.Time{{}, window} {
			got := map[string]offline.LatestRow{}
			n, err := s.ScanLatest(ctx, repo, fv, offline.ScanOptions{At: at, Start: win[0], End: win[1]}, func(r offline.LatestRow) error {
				k := fmt.Sprint(r.Keys)
				if _, dup := got[k]; dup {
					return fmt.Errorf("key %s scanned twice", k)
				}
				got[k] = r
				return nil
			})
			if err != nil {
				t.Fatalf("scan %s: %v", view, err)
			}
			want := map[string]*viewRow{}
			for _, r := range stored[view] {
				k := fmt.Sprint(r.keys)
				if _, seen := want[k]; seen {
					continue
				}
				best := oracleRow(stored[view], r.keys, at, 0)
				if best != nil && (win[0].IsZero() || (!best.event.Before(win[0]) && !best.event.After(win[1]))) {
					want[k] = best
				} else {
					want[k] = nil
				}
			}
			for k, w := range want {
				if w == nil {
					delete(want, k)
				}
			}
			if int(n) != len(want) || len(got) != len(want) {
				t.Errorf("scan %s window %v: %d rows (%d distinct), oracle %d", view, win, n, len(got), len(want))
			}
			for k, w := range want {
				r, ok := got[k]
				if !ok || !reflect.DeepEqual(r.Values, w.values) || r.EventTS != w.event.Unix() || r.CreatedTS != w.created.Unix() {
					t.Errorf("scan %s %s window %v:\n got  %v (found %v)\n want %v at %s", view, k, win, r, ok, w.values, w.event)
				}
			}
		}
	}
}
