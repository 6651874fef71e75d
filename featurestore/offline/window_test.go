package offline_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/offline"
)

const windowRepo = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: orders
    entities: [customer]
    source: {table: %s.events, timestamp_field: ts}
    aggregations:
      - {name: n_1d, function: count, window: 1d}
      - {name: spend_3d, function: sum, column: amount, window: 3d}
      - {name: mean_2d, function: mean, column: amount, window: 2d}
      - {name: min_5d, function: min, column: amount, type: float64, window: 5d}
      - {name: max_12h, function: max, column: qty, type: int64, window: 12h}
      - {name: last_product, function: last, column: product, type: string, window: 2d}
      - {name: products_3d, function: distinct_count, column: product, window: 3d}
      - {name: email_share_4d, function: share, where: "channel = 'email'", window: 4d}
      - {name: since_last_5d, function: days_since_last, window: 5d}
      - {name: email_2d, function: count, where: "channel = 'email'", window: 2d}
`

type event struct {
	customer, product, channel string
	ts                         time.Time
	amount                     float64
	qty                        int64
}

// windowOracle computes the view's features for customer c at t by
// scanning every event: nil when the customer has no event in the longest
// window (5 days).
func windowOracle(events []event, c string, t time.Time) []any {
	in := func(w time.Duration) []event {
		var out []event
		for _, e := range events {
			if e.customer == c && e.ts.After(t.Add(-w)) && !e.ts.After(t) {
				out = append(out, e)
			}
		}
		return out
	}
	day := 24 * time.Hour
	if len(in(5*day)) == 0 {
		return make([]any, 10)
	}
	out := make([]any, 10)
	out[0] = int64(len(in(day)))
	sum := 0.0
	for _, e := range in(3 * day) {
		sum += e.amount
	}
	out[1] = sum
	if es := in(2 * day); len(es) > 0 {
		m := 0.0
		for _, e := range es {
			m += e.amount
		}
		out[2] = m / float64(len(es))
		last := es[0]
		for _, e := range es {
			if e.ts.After(last.ts) || (e.ts.Equal(last.ts) && e.product > last.product) {
				last = e
			}
		}
		out[5] = last.product
	}
	if es := in(5 * day); len(es) > 0 {
		m := math.Inf(1)
		latest := es[0].ts
		for _, e := range es {
			m = math.Min(m, e.amount)
			if e.ts.After(latest) {
				latest = e.ts
			}
		}
		out[3] = m
		out[8] = t.Sub(latest).Seconds() / 86400
	}
	if es := in(12 * time.Hour); len(es) > 0 {
		m := int64(math.MinInt64)
		for _, e := range es {
			m = max(m, e.qty)
		}
		out[4] = m
	}
	seen := map[string]bool{}
	for _, e := range in(3 * day) {
		seen[e.product] = true
	}
	out[6] = int64(len(seen))
	if es := in(4 * day); len(es) > 0 {
		n := 0
		for _, e := range es {
			if e.channel == "email" {
				n++
			}
		}
		out[7] = float64(n) / float64(len(es))
	}
	n := 0
	for _, e := range in(2 * day) {
		if e.channel == "email" {
			n++
		}
	}
	out[9] = int64(n)
	return out
}

func near(a, b any) bool {
	x, ok1 := a.(float64)
	y, ok2 := b.(float64)
	if ok1 && ok2 {
		return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y))
	}
	return a == b
}

// TestWindowAggregationsMatchOracle: every aggregation of a windowed view,
// exported point in time for entity rows at random instants and exactly
// on window bounds, and read for every key at one instant as the online
// tier does, equals a scan of the events.
func TestWindowAggregationsMatchOracle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	db := s.Database()
	if err := s.Conn().Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := s.Conn().Exec(ctx, "CREATE TABLE "+db+".events (customer_id String, ts DateTime, amount Float64, qty Int64, product String, channel String, _inserted_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (customer_id, ts)"); err != nil {
		t.Fatal(err)
	}
	repo := parseRepo(t, map[string]string{"repo.yaml": fmt.Sprintf(windowRepo, db)})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatalf("apply: %v", err)
	}
	rng := rand.New(rand.NewPCG(11, 5))
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	customers := []string{"a", "b", "c", "d", "e"}
	var events []event
	for range 600 {
		ts := base.Add(time.Duration(rng.IntN(12*24*3600)) * time.Second)
		if rng.IntN(4) == 0 && len(events) > 0 {
			ts = events[rng.IntN(len(events))].ts // ties
		}
		events = append(events, event{customer: customers[rng.IntN(len(customers)-1)], product: fmt.Sprintf("p%d", rng.IntN(6)),
			channel: []string{"email", "sms", "push"}[rng.IntN(3)], ts: ts, amount: math.Round(rng.Float64()*10000) / 100, qty: int64(rng.IntN(9)) - 2})
	}
	b, err := s.Conn().PrepareBatch(ctx, "INSERT INTO "+db+".events (customer_id, ts, amount, qty, product, channel)")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := b.Append(e.customer, e.ts, e.amount, e.qty, e.product, e.channel); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	// Entity rows: random instants, event times, and window bounds of
	// events (exactly a window later, and a second before and after).
	ent := &table{names: []string{"customer_id", "event_timestamp"}, types: []arrow.DataType{arrow.BinaryTypes.String, &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}}}
	windows := []time.Duration{12 * time.Hour, 24 * time.Hour, 48 * time.Hour, 72 * time.Hour, 96 * time.Hour, 120 * time.Hour}
	for range 400 {
		c := customers[rng.IntN(len(customers))]
		var at time.Time
		switch rng.IntN(3) {
		case 0:
			at = base.Add(time.Duration(rng.IntN(14*24*3600)) * time.Second)
		case 1:
			e := events[rng.IntN(len(events))]
			c, at = e.customer, e.ts
		default:
			e := events[rng.IntN(len(events))]
			c, at = e.customer, e.ts.Add(windows[rng.IntN(len(windows))]+time.Duration(rng.IntN(3)-1)*time.Second)
		}
		ent.rows = append(ent.rows, []any{c, at})
	}
	refs, err := repo.ResolveRefs([]string{"orders:*"})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := offline.JoinKeys(repo, refs)
	set, err := s.UploadEntities(ctx, "entities", ent.source(64), offline.EntityOptions{JoinKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Drop(ctx)
	watermark, err := s.SnapshotWatermark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ret, err := s.Retrieve(ctx, repo, set, refs, offline.RetrieveOptions{StoredBefore: watermark, BatchRows: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer ret.Close()
	_, got := readAll(t, ret)
	if len(got) != len(ent.rows) {
		t.Fatalf("%d rows, want %d", len(got), len(ent.rows))
	}
	bad := 0
	found := 0
	for i, er := range ent.rows {
		want := windowOracle(events, er[0].(string), er[1].(time.Time))
		if want[0] != nil {
			found++
		}
		for j := range want {
			if !near(got[i][2+j], want[j]) {
				bad++
				if bad <= 8 {
					t.Errorf("row %d (%s at %s) %s: got %v, want %v", i, er[0], er[1].(time.Time).Format(time.RFC3339), refs[j].Feature, got[i][2+j], want[j])
				}
				break
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d rows differ from the oracle", bad, len(ent.rows))
	}
	if found < 100 || found == len(ent.rows) {
		t.Fatalf("%d of %d rows found events: the test does not cover both cases", found, len(ent.rows))
	}

	// Subsets and orders of the features: each column holds the
	// aggregation it is named for (a reordering once swapped them).
	fv, _ := repo.View("orders")
	subsets := [][]int{{8, 1, 5}, {0, 9}, {9, 0}, {3}, {7, 6, 5, 4, 3, 2, 1, 0}}
	for range 4 {
		subsets = append(subsets, rng.Perm(len(fv.Features))[:1+rng.IntN(len(fv.Features))])
	}
	for _, idx := range subsets {
		var names []string
		for _, j := range idx {
			names = append(names, "orders:"+fv.Features[j].Name)
		}
		sub, err := repo.ResolveRefs(names)
		if err != nil {
			t.Fatal(err)
		}
		ret, err := s.Retrieve(ctx, repo, set, sub, offline.RetrieveOptions{StoredBefore: watermark})
		if err != nil {
			t.Fatal(err)
		}
		_, got := readAll(t, ret)
		ret.Close()
		for i, er := range ent.rows {
			want := windowOracle(events, er[0].(string), er[1].(time.Time))
			for n, j := range idx {
				if !near(got[i][2+n], want[j]) {
					t.Fatalf("features %v, row %d (%s at %s): column %s holds %v, want %v", names, i, er[0], er[1].(time.Time).Format(time.RFC3339), names[n], got[i][2+n], want[j])
				}
			}
		}
	}

	// Latest: the online read-through at one instant, for every key.
	for _, at := range []time.Time{base.Add(6*24*time.Hour + 7*time.Hour), events[0].ts, events[1].ts.Add(24 * time.Hour)} {
		rows, err := s.Latest(ctx, repo, fv, [][]any{{"a"}, {"b"}, {"c"}, {"d"}, {"e"}}, at)
		if err != nil {
			t.Fatal(err)
		}
		byKey := map[string][]any{}
		for _, r := range rows {
			byKey[r.Keys[0].(string)] = r.Values
		}
		for _, c := range customers {
			want := windowOracle(events, c, at)
			vals, ok := byKey[c]
			if ok != (want[0] != nil) {
				t.Errorf("latest %s at %s: found %v, oracle %v", c, at, ok, want[0] != nil)
				continue
			}
			for j := range want {
				if ok && !near(vals[j], want[j]) {
					t.Errorf("latest %s at %s %s: %v, want %v", c, at, fv.Features[j].Name, vals[j], want[j])
				}
			}
		}
	}
}

// TestWindowViewApplyChecksTheEventTable: columns the aggregations read
// must exist with usable types, and where clauses must work, or apply is
// refused naming the aggregation.
func TestWindowViewApplyChecksTheEventTable(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	db := s.Database()
	_ = s.Conn().Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db)
	if err := s.Conn().Exec(ctx, "CREATE TABLE "+db+".ev (customer_id String, ts DateTime, amount Float64, product String) ENGINE = MergeTree ORDER BY ts"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ agg, want string }{
		{"{name: x, function: sum, column: nope, window: 1d}", `no column "nope"`},
		{"{name: x, function: sum, column: product, window: 1d}", `"product" is String`},
		{"{name: x, function: count, where: \"colour = 'red'\", window: 1d}", `where "colour = 'red'" does not work`},
		{"{name: x, function: last, column: amount, type: string, window: 1d}", `"amount" is Float64`},
	} {
		repo := parseRepo(t, map[string]string{"r.yaml": "entities:\n  - {name: customer, join_key: customer_id, type: string}\nfeature_views:\n  - name: v\n    entities: [customer]\n    source: {table: " + db + ".ev, timestamp_field: ts}\n    aggregations:\n      - " + tc.agg + "\n"})
		_, _, err := s.Apply(ctx, repo, "test")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "r.yaml:8") {
			t.Errorf("%s: %v, want an error at r.yaml:8 naming %s", tc.agg, err, tc.want)
		}
	}
}
