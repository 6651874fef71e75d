package trainingexport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/protobuf/proto"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/materialize"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	exportv1 "github.com/tailorhq/tailor/proto/gen/tailor/export/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
	onnxv1 "github.com/tailorhq/tailor/proto/gen/tailor/onnx/v1"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	trainingexport "github.com/tailorhq/tailor/training-export"
	"github.com/tailorhq/tailor/training-export/exportserver"
)

// dsn is this test binary's private ClickHouse.
var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

// parityRepo has a plain view of every scalar and array type with a ttl,
// a view keyed by two entities, a view over an external table, and a
// windowed view with every aggregation function.
const parityRepo = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: cust
    entities: [customer]
    ttl: 72h
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: ratio, type: float32}
      - {name: level, type: int32}
      - {name: segment, type: string}
      - {name: vip, type: bool}
      - {name: last_seen, type: timestamp}
      - {name: embedding, type: array<float32>}
  - name: cust_prod
    entities: [customer, product]
    ttl: 0
    features:
      - {name: views, type: int64}
      - {name: affinity, type: float64}
  - name: ext
    entities: [product]
    ttl: 240h
    source: {table: %[1]s.ext_products, timestamp_field: ts, created_timestamp_field: created}
    features:
      - {name: price, type: float64}
      - {name: stock, type: int64}
  - name: orders
    entities: [customer]
    source: {table: %[1]s.events, timestamp_field: ts}
    aggregations:
      - {name: n_7d, function: count, window: 7d}
      - {name: spend_30d, function: sum, column: amount, window: 30d}
      - {name: mean_30d, function: mean, column: amount, window: 30d}
      - {name: min_90d, function: min, column: amount, type: float64, window: 90d}
      - {name: max_qty_7d, function: max, column: qty, type: int64, window: 7d}
      - {name: last_product_30d, function: last, column: product, type: string, window: 30d}
      - {name: products_90d, function: distinct_count, column: product, window: 90d}
      - {name: email_share_30d, function: share, where: "channel = 'email'", window: 30d}
      - {name: days_since_last_90d, function: days_since_last, window: 90d}
      - {name: sms_7d, function: count, where: "channel = 'sms'", window: 7d}
`

// parityRow is a stored row of a plain view for the oracle.
type parityRow struct {
	keys           []any
	event, created time.Time
	values         []any
}

// parityEvent is an event of the windowed view's table.
type parityEvent struct {
	customer, product, channel string
	ts                         time.Time
	amount                     float64
	qty                        int64
}

// parityWorld is the data of the test and the oracle answering it by
// scanning every row and event.
type parityWorld struct {
	repo   *definitions.Repo
	rows   map[string][]parityRow
	events []parityEvent
	at     time.Time
}

// plain answers view v for keys at w.at: the row with the greatest
// (event, created) not after the instant and within the ttl; nil: none.
func (w *parityWorld) plain(v *definitions.FeatureView, keys []any) []any {
	var best *parityRow
	for i := range w.rows[v.Name] {
		r := &w.rows[v.Name][i]
		if !reflect.DeepEqual(r.keys, keys) || r.event.After(w.at) || (v.TTL > 0 && r.event.Before(w.at.Add(-v.TTL))) {
			continue
		}
		if best == nil || r.event.After(best.event) || r.event.Equal(best.event) && r.created.After(best.created) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	out := slices.Clone(best.values)
	for j, f := range v.Features {
		if out[j] == nil && f.Type.IsArray() {
			out[j] = []float32{} // a null array is stored empty
		}
	}
	return out
}

// windowed answers the windowed view for customer c at w.at.
func (w *parityWorld) windowed(v *definitions.FeatureView, c string) []any {
	in := func(d time.Duration, where func(parityEvent) bool) []parityEvent {
		var out []parityEvent
		for _, e := range w.events {
			if e.customer == c && e.ts.After(w.at.Add(-d)) && !e.ts.After(w.at) && (where == nil || where(e)) {
				out = append(out, e)
			}
		}
		return out
	}
	if len(in(v.LongestWindow(), nil)) == 0 {
		return nil
	}
	out := make([]any, len(v.Features))
	for j, f := range v.Features {
		a := f.Agg
		var where func(parityEvent) bool
		switch a.Where {
		case "channel = 'email'":
			where = func(e parityEvent) bool { return e.channel == "email" }
		case "channel = 'sms'":
			where = func(e parityEvent) bool { return e.channel == "sms" }
		}
		es := in(a.Window, where)
		switch a.Function {
		case definitions.AggCount:
			out[j] = int64(len(es))
		case definitions.AggSum:
			s := 0.0
			for _, e := range es {
				s += e.amount
			}
			out[j] = s
		case definitions.AggMean, definitions.AggMin:
			if len(es) == 0 {
				continue
			}
			s, m := 0.0, math.Inf(1)
			for _, e := range es {
				s += e.amount
				m = math.Min(m, e.amount)
			}
			out[j] = m
			if a.Function == definitions.AggMean {
				out[j] = s / float64(len(es))
			}
		case definitions.AggMax:
			if len(es) == 0 {
				continue
			}
			m := int64(math.MinInt64)
			for _, e := range es {
				m = max(m, e.qty)
			}
			out[j] = m
		case definitions.AggLast:
			if len(es) == 0 {
				continue
			}
			last := es[0]
			for _, e := range es {
				if e.ts.After(last.ts) || e.ts.Equal(last.ts) && e.product > last.product {
					last = e
				}
			}
			out[j] = last.product
		case definitions.AggDistinctCount:
			seen := map[string]bool{}
			for _, e := range es {
				seen[e.product] = true
			}
			out[j] = int64(len(seen))
		case definitions.AggShare:
			all := in(a.Window, nil)
			if len(all) > 0 {
				out[j] = float64(len(es)) / float64(len(all))
			}
		case definitions.AggDaysSinceLast:
			if len(es) == 0 {
				continue
			}
			last := es[0].ts
			for _, e := range es {
				if e.ts.After(last) {
					last = e.ts
				}
			}
			out[j] = float64(w.at.Unix()-last.Unix()) / 86400
		}
	}
	return out
}

// answer is the oracle's value of ref for an entity row.
func (w *parityWorld) answer(ref definitions.FeatureRef, entity map[string]any) any {
	v, _ := w.repo.View(ref.View)
	var vals []any
	if v.Windowed() {
		vals = w.windowed(v, entity["customer_id"].(string))
	} else {
		var keys []any
		for _, e := range w.repo.JoinKeys(v) {
			keys = append(keys, entity[e.JoinKey])
		}
		vals = w.plain(v, keys)
	}
	if vals == nil {
		return nil
	}
	return vals[slices.IndexFunc(v.Features, func(f definitions.Feature) bool { return f.Name == ref.Feature })]
}

// TestParityMatrix: for plain views of every type, a view keyed by two
// entities, a view over an external table and a windowed view with every
// aggregation, and for random subsets and orders of their features
// (view:* and several views in one request among them), the five ways
// to the same answer agree with each other and with an oracle that scans
// every row and event, at one instant: the file export, the
// ExportService stream, the features batch scoring feeds a model, the
// online tier after materialization, and the online read-through.
func TestParityMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	store, w := parityStore(t, ctx)
	dir := t.TempDir()

	// The entity rows, all at the instant: known and unknown customers,
	// products with and without rows, a key twice.
	var entities []map[string]any
	var csv strings.Builder
	csv.WriteString("customer_id,product_id,event_timestamp\n")
	rng := mrand.New(mrand.NewPCG(7, 11))
	for c := range 14 {
		for range 3 {
			p := parityProducts[rng.IntN(len(parityProducts))]
			entities = append(entities, map[string]any{"customer_id": fmt.Sprintf("c%02d", c), "product_id": p})
		}
	}
	entities = append(entities, entities[0])
	for _, e := range entities {
		fmt.Fprintf(&csv, "%s,%d,%s\n", e["customer_id"], e["product_id"], w.at.Format(time.RFC3339))
	}
	entityFile := filepath.Join(dir, "entities.csv")
	if err := os.WriteFile(entityFile, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	checkCoverage(t, w, entities)
	av, err := store.Applied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exports := exportService(t, store, av)
	models, err := registry.New(ctx, store.Conn(), store.Database(), registry.InspectONNX, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	watermark, err := store.SnapshotWatermark(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The online tier filled by materialization at the instant, and one
	// that reads every key through.
	clock := func() time.Time { return w.at }
	materialized := onlinestore.New(store, onlinetier.New(onlinetier.Options{}), onlinestore.Options{Now: clock})
	if _, err := materialize.Run(ctx, store, w.repo, materialized, materialize.Options{At: w.at}); err != nil {
		t.Fatal(err)
	}

	requests := [][]string{
		{"orders:*"},
		{"cust:*", "cust_prod:*", "ext:*", "orders:*"},
		{"orders:days_since_last_90d", "orders:spend_30d", "orders:last_product_30d"},
		{"orders:spend_30d", "orders:n_7d"},
		{"ext:stock", "cust:embedding", "orders:sms_7d", "cust_prod:affinity", "cust:last_seen"},
	}
	var all []string
	for i := range w.repo.FeatureViews {
		v := &w.repo.FeatureViews[i]
		for _, f := range v.Features {
			all = append(all, v.Name+":"+f.Name)
		}
	}
	for range 4 {
		perm := rng.Perm(len(all))[:2+rng.IntN(len(all)-2)]
		var req []string
		for _, i := range perm {
			req = append(req, all[i])
		}
		requests = append(requests, req)
	}

	for n, req := range requests {
		t.Run(fmt.Sprintf("request%d", n), func(t *testing.T) {
			refs, err := w.repo.ResolveRefs(req)
			if err != nil {
				t.Fatal(err)
			}
			want := make([][]any, len(entities))
			for i, e := range entities {
				for _, r := range refs {
					want[i] = append(want[i], w.answer(r, e))
				}
			}

			// The file export.
			out := filepath.Join(dir, fmt.Sprintf("export%d.parquet", n))
			if _, err := trainingexport.Export(ctx, store, w.repo, trainingexport.Request{
				EntitiesFile: entityFile, Features: req, Out: out, FullNames: true, Watermark: watermark, DefinitionsVersion: av.Version,
			}); err != nil {
				t.Fatal(err)
			}
			checkPaths(t, "file export", req, refs, entities, want, readTable(t, out, refs))

			// The ExportService stream.
			stream := exports.export(t, req, csv.String())
			checkPaths(t, "ExportService stream", req, refs, entities, want, stream.features(t, refs))

			// Online: materialized, and read through.
			checkPaths(t, "online, materialized", req, refs, entities, want, online(t, ctx, materialized, w.repo, refs, entities))
			reader := onlinestore.New(store, onlinetier.New(onlinetier.Options{}), onlinestore.Options{Now: clock})
			checkPaths(t, "online, read through", req, refs, entities, want, online(t, ctx, reader, w.repo, refs, entities))

			// Batch scoring: a model that outputs its input shows what
			// scoring fed it; it must be the oracle's values assembled.
			spec := identitySpec(fmt.Sprintf("parity%d", n), refs, w)
			plan, err := assemble.Compile(spec.parsed(t), w.repo)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := models.Register(ctx, "model.yaml", []byte(spec.yaml), identityModel(t, spec.width), w.repo, "test"); err != nil {
				t.Fatal(err)
			}
			scores := filepath.Join(dir, fmt.Sprintf("scores%d.parquet", n))
			if _, err := trainingexport.Score(ctx, store, models, w.repo, trainingexport.ScoreRequest{
				Model: spec.name, EntitiesFile: entityFile, At: w.at, Out: scores,
			}); err != nil {
				t.Fatal(err)
			}
			derived, err := assemble.DeriveContext(nil, w.at)
			if err != nil {
				t.Fatal(err)
			}
			rows := make([]assemble.Row, len(entities))
			for i := range rows {
				rows[i] = assemble.Row{Features: want[i], Context: derived}
			}
			expected := plan.Fill(rows)[0].Float64
			got := readScores(t, scores, spec.width)
			for i := range entities {
				if !reflect.DeepEqual(got[i], expected[i*spec.width:(i+1)*spec.width]) {
					t.Fatalf("batch scoring fed the model, for entity row %d (%v):\n got  %v\n want %v (features %v)", i, entities[i], got[i], expected[i*spec.width:(i+1)*spec.width], want[i])
				}
			}
		})
	}
}

// checkCoverage fails unless the entity rows meet every case the paths
// must agree on: each view with and without a row, rows past a view's
// ttl, and null values in rows.
func checkCoverage(t *testing.T, w *parityWorld, entities []map[string]any) {
	t.Helper()
	for i := range w.repo.FeatureViews {
		v := &w.repo.FeatureViews[i]
		found, absent, nulls := 0, 0, 0
		for _, e := range entities {
			vals := []any(nil)
			if v.Windowed() {
				vals = w.windowed(v, e["customer_id"].(string))
			} else {
				var keys []any
				for _, k := range w.repo.JoinKeys(v) {
					keys = append(keys, e[k.JoinKey])
				}
				vals = w.plain(v, keys)
			}
			if vals == nil {
				absent++
				continue
			}
			found++
			if slices.Contains(vals, nil) {
				nulls++
			}
		}
		if found == 0 || absent == 0 || nulls == 0 {
			t.Fatalf("view %s: %d entity rows with a row, %d without, %d with nulls: the test does not cover every case", v.Name, found, absent, nulls)
		}
	}
	expired := 0
	for c := range 12 {
		id := fmt.Sprintf("c%02d", c)
		v, _ := w.repo.View("cust")
		if w.plain(v, []any{id}) != nil {
			continue
		}
		for _, r := range w.rows["cust"] {
			if r.keys[0] == id && !r.event.After(w.at) {
				expired++
				break
			}
		}
	}
	if expired == 0 {
		t.Fatal("no customer has only rows past the ttl: OUTSIDE_MAX_AGE is not covered")
	}
}

// parityProducts are the product keys of the entity rows: some with
// rows, one never seen, one beyond float64's exact integers.
var parityProducts = []int64{1, 2, 3, 4, 5, 9, 1<<53 + 1}

// parityStore applies the repo in a fresh database and loads random rows
// and events around the instant, with ties, nulls, ttl and window bounds.
func parityStore(t *testing.T, ctx context.Context) (*offline.Store, *parityWorld) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "parity_" + hex.EncodeToString(b)
	store, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = store.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		store.Close()
	})
	for _, q := range []string{
		"CREATE TABLE " + db + ".ext_products (product_id Int64, ts DateTime, created DateTime, price Nullable(Float64), stock Nullable(Int64), _inserted_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (product_id, ts)",
		"CREATE TABLE " + db + ".events (customer_id String, ts DateTime, amount Float64, qty Int64, product String, channel String, _inserted_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (customer_id, ts)",
	} {
		if err := store.Conn().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := definitions.Parse(map[string][]byte{"repo.yaml": fmt.Appendf(nil, parityRepo, db)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 20, 12, 0, 0, 0, time.UTC)
	w := &parityWorld{repo: repo, rows: map[string][]parityRow{}, at: at}
	rng := mrand.New(mrand.NewPCG(3, 5))
	quarter := func(n int) float64 { return float64(rng.IntN(n)) / 4 } // exact in float64
	maybe := func(v any) any {
		if rng.IntN(6) == 0 {
			return nil
		}
		return v
	}
	// Event times around the instant: inside and past the ttl, exactly on
	// it, and after the instant (never read).
	when := func(ttl time.Duration) time.Time {
		switch rng.IntN(5) {
		case 0:
			return at.Add(-ttl)
		case 1:
			return at.Add(time.Duration(1+rng.IntN(3600)) * time.Second)
		default:
			return at.Add(-time.Duration(rng.IntN(int(ttl/time.Second)*4/3)) * time.Second)
		}
	}
	segments := []string{"gold", "silver", "bronze"}
	for c := range 12 {
		id := fmt.Sprintf("c%02d", c)
		var prev *parityRow
		for range 1 + rng.IntN(4) {
			r := parityRow{keys: []any{id}, event: when(72 * time.Hour), created: at.Add(-time.Duration(rng.IntN(1000)) * time.Hour)}
			if c == 11 {
				r.event = at.Add(-72*time.Hour - time.Duration(1+rng.IntN(1e5))*time.Second) // only rows past the ttl
			}
			if prev != nil && rng.IntN(3) == 0 {
				r.event = prev.event // a tie, broken by the created time
			}
			var emb any
			if rng.IntN(4) > 0 {
				emb = []float32{float32(quarter(40)), float32(quarter(40))}[:rng.IntN(3)]
			}
			r.values = []any{maybe(int64(rng.IntN(1000))), maybe(quarter(4000)), maybe(float32(quarter(400))), maybe(int32(rng.IntN(10))),
				maybe(segments[rng.IntN(3)]), maybe(rng.IntN(2) == 0), maybe(at.Add(-time.Duration(rng.IntN(1e6)) * time.Second)), emb}
			w.rows["cust"] = append(w.rows["cust"], r)
			prev = &w.rows["cust"][len(w.rows["cust"])-1]
		}
		for range rng.IntN(4) {
			p := parityProducts[rng.IntN(len(parityProducts)-2)]
			w.rows["cust_prod"] = append(w.rows["cust_prod"], parityRow{keys: []any{id, p}, event: at.Add(-time.Duration(rng.IntN(1e7)) * time.Second),
				created: at, values: []any{maybe(int64(rng.IntN(50))), maybe(quarter(100))}})
		}
		for range rng.IntN(12) {
			ts := at.Add(-time.Duration(rng.IntN(100*24*3600)) * time.Second)
			switch rng.IntN(6) {
			case 0:
				ts = at.Add(-7 * 24 * time.Hour) // exactly a window back: outside
			case 1:
				ts = at // exactly the instant: inside
			case 2:
				ts = at.Add(time.Hour) // after the instant
			}
			w.events = append(w.events, parityEvent{customer: id, product: fmt.Sprintf("p%d", rng.IntN(5)), channel: []string{"email", "sms", "push"}[rng.IntN(3)],
				ts: ts, amount: quarter(400), qty: int64(rng.IntN(9)) - 2})
		}
	}
	for _, p := range parityProducts[:len(parityProducts)-2] {
		for range 1 + rng.IntN(3) {
			w.rows["ext"] = append(w.rows["ext"], parityRow{keys: []any{p}, event: when(240 * time.Hour), created: at.Add(-time.Duration(rng.IntN(100)) * time.Hour),
				values: []any{maybe(quarter(4000)), maybe(int64(rng.IntN(100)))}})
		}
	}
	loadParity(t, ctx, store, w, db)
	return store, w
}

// loadParity stores the world: tailor-owned views through ingestion of a
// CSV file, the external table and the events by insert.
func loadParity(t *testing.T, ctx context.Context, store *offline.Store, w *parityWorld, db string) {
	t.Helper()
	dir := t.TempDir()
	for _, view := range []string{"cust", "cust_prod"} {
		v, _ := w.repo.View(view)
		var b strings.Builder
		var head []string
		for _, e := range w.repo.JoinKeys(v) {
			head = append(head, e.JoinKey)
		}
		head = append(head, "event_ts", "created_ts")
		for _, f := range v.Features {
			head = append(head, f.Name)
		}
		b.WriteString(strings.Join(head, ",") + "\n")
		for _, r := range w.rows[view] {
			var cells []string
			for _, k := range r.keys {
				cells = append(cells, fmt.Sprint(k))
			}
			cells = append(cells, r.event.Format(time.RFC3339), r.created.Format(time.RFC3339))
			for _, val := range r.values {
				cells = append(cells, csvCell(val))
			}
			b.WriteString(strings.Join(cells, ",") + "\n")
		}
		file := filepath.Join(dir, view+".csv")
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := tablefile.Open(file, tablefile.CSV, tablefile.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Ingest(ctx, w.repo, view, file, src, offline.IngestOptions{}); err != nil {
			t.Fatal(err)
		}
		src.Close()
	}
	batch, err := store.Conn().PrepareBatch(ctx, "INSERT INTO "+db+".ext_products (product_id, ts, created, price, stock)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range w.rows["ext"] {
		if err := batch.Append(r.keys[0], r.event, r.created, r.values[0], r.values[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	batch, err = store.Conn().PrepareBatch(ctx, "INSERT INTO "+db+".events (customer_id, ts, amount, qty, product, channel)")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range w.events {
		if err := batch.Append(e.customer, e.ts, e.amount, e.qty, e.product, e.channel); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// csvCell writes a value as tailor's CSV reader reads it back.
func csvCell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.Format(time.RFC3339)
	case []float32:
		parts := make([]string, len(x))
		for i, f := range x {
			parts[i] = fmt.Sprint(f)
		}
		return `"[` + strings.Join(parts, ",") + `]"`
	}
	return fmt.Sprint(v)
}

// checkPaths compares one way's answer with the oracle's.
func checkPaths(t *testing.T, path string, req []string, refs []definitions.FeatureRef, entities []map[string]any, want, got [][]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s of %v: %d rows, want %d", path, req, len(got), len(want))
	}
	for i := range want {
		for j := range refs {
			if !same(got[i][j], want[i][j]) {
				t.Fatalf("%s of %v: entity row %d (%v), %s: got %#v, want %#v (the oracle)", path, req, i, entities[i], refs[j], got[i][j], want[i][j])
			}
		}
	}
}

// same compares values as every path gives them: times by instant, empty
// arrays alike however they were made.
func same(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	ra, rb := reflect.ValueOf(a), reflect.ValueOf(b)
	if a != nil && b != nil && ra.Kind() == reflect.Slice && rb.Kind() == reflect.Slice && ra.Len() == 0 && rb.Len() == 0 {
		return ra.Type() == rb.Type()
	}
	return reflect.DeepEqual(a, b)
}

// readTable reads an export's feature columns (view__feature) back.
func readTable(t *testing.T, path string, refs []definitions.FeatureRef) [][]any {
	t.Helper()
	f, err := tablefile.DetectFormat(path, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := tablefile.Open(path, f, tablefile.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return readFeatures(t, r, refs)
}

// recordReader is a stream of Arrow record batches.
type recordReader interface {
	Schema() *arrow.Schema
	Next() (arrow.RecordBatch, error)
}

func readFeatures(t *testing.T, r recordReader, refs []definitions.FeatureRef) [][]any {
	t.Helper()
	cols := make([]int, len(refs))
	for j, ref := range refs {
		idx := r.Schema().FieldIndices(offline.OutputName(ref, true))
		if len(idx) != 1 {
			t.Fatalf("no column %s in %v", offline.OutputName(ref, true), r.Schema())
		}
		cols[j] = idx[0]
	}
	var out [][]any
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(rec.NumRows()) {
			row := make([]any, len(refs))
			for j, ref := range refs {
				v, err := offline.CellValue(rec.Column(cols[j]), i, ref.Type)
				if err != nil {
					t.Fatal(err)
				}
				row[j] = v
			}
			out = append(out, row)
		}
		rec.Release()
	}
}

// online answers refs for the entity rows through an online store.
func online(t *testing.T, ctx context.Context, s *onlinestore.Store, repo *definitions.Repo, refs []definitions.FeatureRef, entities []map[string]any) [][]any {
	t.Helper()
	results, err := s.Get(ctx, repo, refs, onlinestore.MapRows(entities))
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]any, len(results))
	for i, row := range results {
		out[i] = make([]any, len(refs))
		for j := range row {
			if row[j].Status == onlinestore.Present {
				out[i][j] = row[j].Value()
			}
		}
	}
	return out
}

// exportClient is a client of a real ExportService over HTTP.
type exportClient struct {
	client exportv1connect.ExportServiceClient
}

func exportService(t *testing.T, store *offline.Store, av *offline.AppliedVersion) *exportClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(exportv1connect.NewExportServiceHandler(exportserver.New(store, func() *offline.AppliedVersion { return av }, slog.New(slog.DiscardHandler))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &exportClient{client: exportv1connect.NewExportServiceClient(srv.Client(), srv.URL)}
}

// arrowStream is the Arrow IPC stream an ExportService call sent.
type arrowStream []byte

func (c *exportClient) export(t *testing.T, features []string, entitiesCSV string) arrowStream {
	t.Helper()
	stream, err := c.client.ExportTrainingSet(context.Background(), connect.NewRequest(&exportv1.ExportTrainingSetRequest{
		Features: features, FullNames: true,
		Entities: &exportv1.ExportTrainingSetRequest_File{File: &exportv1.EntityFile{Name: "entities.csv", Format: "csv", Content: []byte(entitiesCSV)}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for stream.Receive() {
		buf.Write(stream.Msg().GetArrow())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (s arrowStream) features(t *testing.T, refs []definitions.FeatureRef) [][]any {
	t.Helper()
	r, err := ipc.NewReader(bytes.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	return readFeatures(t, ipcRecords{r}, refs)
}

// ipcRecords adapts an IPC stream reader to recordReader.
type ipcRecords struct{ r *ipc.Reader }

func (i ipcRecords) Schema() *arrow.Schema { return i.r.Schema() }
func (i ipcRecords) Next() (arrow.RecordBatch, error) {
	if !i.r.Next() {
		if err := i.r.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	rec := i.r.RecordBatch()
	rec.Retain()
	return rec, nil
}

// modelSpec is the model.yaml of an identity model over features.
type modelSpec struct {
	name, yaml string
	width      int
}

func (m modelSpec) parsed(t *testing.T) *registry.Spec {
	t.Helper()
	s, err := registry.ParseSpec("model.yaml", []byte(m.yaml))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// identitySpec lays out every feature with a missing indicator: numbers
// as they are, text one-hot over the values the world holds, arrays in
// three positions.
func identitySpec(name string, refs []definitions.FeatureRef, w *parityWorld) modelSpec {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ntask: generic\ninputs:\n  - name: x\n    type: float64\n    elements:\n", name)
	width := 0
	for _, r := range refs {
		switch {
		case r.Type == definitions.String:
			vocab := []string{"gold", "silver", "p0", "p1", "p2", "p3"} // bronze and p4 are outside it
			fmt.Fprintf(&b, "      - {feature: %q, encoding: one_hot, vocabulary: [%s], missing_indicator: true}\n", r.String(), strings.Join(vocab, ", "))
			width += len(vocab) + 1
		case r.Type.IsArray():
			fmt.Fprintf(&b, "      - {feature: %q, size: 3, default: -7, missing_indicator: true}\n", r.String())
			width += 4
		default:
			fmt.Fprintf(&b, "      - {feature: %q, default: -7, missing_indicator: true}\n", r.String())
			width += 2
		}
	}
	b.WriteString("outputs:\n  - name: y\n")
	return modelSpec{name: name, yaml: b.String(), width: width}
}

// identityModel is an ONNX model whose output y is its float64 input x,
// [N, width].
func identityModel(t *testing.T, width int) []byte {
	t.Helper()
	matrix := func(name string) *onnxv1.ValueInfoProto {
		return &onnxv1.ValueInfoProto{Name: name, Type: &onnxv1.TypeProto{Value: &onnxv1.TypeProto_TensorType{TensorType: &onnxv1.TypeProto_Tensor{
			ElemType: 11, // DOUBLE
			Shape: &onnxv1.TensorShapeProto{Dim: []*onnxv1.TensorShapeProto_Dimension{
				{Value: &onnxv1.TensorShapeProto_Dimension_DimParam{DimParam: "N"}},
				{Value: &onnxv1.TensorShapeProto_Dimension_DimValue{DimValue: int64(width)}},
			}},
		}}}}
	}
	b, err := proto.Marshal(&onnxv1.ModelProto{
		IrVersion: 8, OpsetImport: []*onnxv1.OperatorSetIdProto{{Version: 13}}, ProducerName: "parity test",
		Graph: &onnxv1.GraphProto{
			Name:   "identity",
			Node:   []*onnxv1.NodeProto{{Name: "id", OpType: "Identity", Input: []string{"x"}, Output: []string{"y"}}},
			Input:  []*onnxv1.ValueInfoProto{matrix("x")},
			Output: []*onnxv1.ValueInfoProto{matrix("y")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readScores reads the y__k columns of a scoring run, one row each.
func readScores(t *testing.T, path string, width int) [][]float64 {
	t.Helper()
	r, err := tablefile.Open(path, tablefile.Parquet, tablefile.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var names []string
	for k := range width {
		names = append(names, fmt.Sprintf("y__%d", k))
	}
	var out [][]float64
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(rec.NumRows()) {
			row := make([]float64, width)
			for k, name := range names {
				idx := rec.Schema().FieldIndices(name)
				if len(idx) != 1 {
					t.Fatalf("no column %s in the scores: %v", name, rec.Schema())
				}
				v, err := offline.CellValue(rec.Column(idx[0]), i, definitions.Float64)
				if err != nil {
					t.Fatal(err)
				}
				row[k] = v.(float64)
			}
			out = append(out, row)
		}
		rec.Release()
	}
	return out
}

// TestExportServicePoolExhausted: when every ClickHouse connection of the
// server is busy, an export is Unavailable (a fault of the server side,
// worth retrying later), not InvalidArgument.
func TestExportServicePoolExhausted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base, _ := parityStore(t, ctx)
	small, err := offline.Open(ctx, dsn+"?max_open_conns=2&dial_timeout=300ms", offline.Options{Database: base.Database(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	av, err := small.Applied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exports := exportService(t, small, av)
	busy := make(chan error, 2)
	for range 2 {
		go func() {
			var x uint8
			busy <- small.Conn().QueryRow(ctx, "SELECT sleep(3)").Scan(&x)
		}()
	}
	time.Sleep(300 * time.Millisecond) // both connections are taken
	stream, err := exports.client.ExportTrainingSet(ctx, connect.NewRequest(&exportv1.ExportTrainingSetRequest{
		Features: []string{"cust:orders"},
		Entities: &exportv1.ExportTrainingSetRequest_Sql{Sql: "SELECT 'c00' AS customer_id, now() AS event_timestamp"},
	}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("export with every connection busy: %v, want Unavailable", err)
	}
	for range 2 {
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
	}
}
