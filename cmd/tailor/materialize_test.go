package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

const onlineDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: cust
    entities: [customer]
    ttl: 2h
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
      - {name: vip, type: bool}
      - {name: last_seen, type: timestamp}
      - {name: embedding, type: array<float32>}
  - name: prod
    entities: [product]
    ttl: 0
    features:
      - {name: popularity, type: float32}
      - {name: stock, type: int32}
      - {name: tags, type: array<string>}
      - {name: ids, type: array<int64>}
  - name: cust_prod
    entities: [customer, product]
    ttl: 30m
    features:
      - {name: views, type: int64}
`

// onlineWorld is random rows pushed into the three views of onlineDefs.
type onlineWorld struct {
	customers []string
	products  []int64
	rows      map[string]int // view -> distinct keys with rows
}

// pushRandomWorld pushes random rows through the server at base: ties on
// event time broken by created time, nulls, int64 keys and values beyond
// 2^53, and event times kept two minutes away from every ttl bound so the
// answer cannot depend on when exactly "now" is read.
func pushRandomWorld(t *testing.T, base string, rng *rand.Rand) *onlineWorld {
	t.Helper()
	ctx := context.Background()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	now := time.Now().UTC().Truncate(time.Second)
	w := &onlineWorld{rows: map[string]int{}}
	for i := range 40 {
		w.customers = append(w.customers, fmt.Sprintf("c%d", i))
	}
	w.customers = append(w.customers, "ç ünïcode", "quote'\"\\")
	for i := range 25 {
		w.products = append(w.products, 1<<53+int64(i)*7919-50)
	}
	w.products = append(w.products, -1, 1<<62+1)
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	i64 := func(n int64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
	}
	eventTime := func(ttl time.Duration) time.Time {
		for {
			var ev time.Time
			if rng.IntN(3) == 0 {
				ev = now.Add(-time.Duration(1+rng.IntN(12)) * 20 * time.Minute) // a coarse grid: ties
			} else {
				ev = now.Add(-time.Minute - time.Duration(rng.IntN(5*3600))*time.Second)
			}
			if d := ev.Sub(now.Add(-ttl)); ttl > 0 && d > -2*time.Minute && d < 2*time.Minute {
				continue
			}
			return ev
		}
	}
	maybe := func(v *featurestorev1.Value) *featurestorev1.Value {
		if rng.IntN(6) == 0 {
			return nil
		}
		return v
	}
	views := []struct {
		name string
		ttl  time.Duration
		keys func() map[string]*featurestorev1.Value
		vals func() map[string]*featurestorev1.Value
	}{
		{"cust", 2 * time.Hour, func() map[string]*featurestorev1.Value {
			// Leave the last two customers without rows.
			return map[string]*featurestorev1.Value{"customer_id": str(w.customers[rng.IntN(len(w.customers)-2)])}
		}, func() map[string]*featurestorev1.Value {
			return map[string]*featurestorev1.Value{
				"orders":    maybe(i64(rng.Int64N(1 << 60))),
				"spend":     maybe(&featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: rng.NormFloat64() * 1e6}}),
				"segment":   maybe(str(fmt.Sprintf("seg-%d", rng.IntN(4)))),
				"vip":       maybe(&featurestorev1.Value{Kind: &featurestorev1.Value_BoolValue{BoolValue: rng.IntN(2) == 0}}),
				"last_seen": maybe(&featurestorev1.Value{Kind: &featurestorev1.Value_TimestampValue{TimestampValue: timestamppb.New(now.Add(-time.Duration(rng.IntN(1e6)) * time.Second))}}),
				"embedding": {Kind: &featurestorev1.Value_Float32ListValue{Float32ListValue: &featurestorev1.Float32List{Values: []float32{rng.Float32(), -rng.Float32()}}}},
			}
		}},
		{"prod", 0, func() map[string]*featurestorev1.Value {
			return map[string]*featurestorev1.Value{"product_id": i64(w.products[rng.IntN(len(w.products)-1)])}
		}, func() map[string]*featurestorev1.Value {
			return map[string]*featurestorev1.Value{
				"popularity": maybe(&featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: rng.Float32()}}),
				"stock":      maybe(&featurestorev1.Value{Kind: &featurestorev1.Value_Int32Value{Int32Value: rng.Int32N(100) - 50}}),
				"tags":       {Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{"t" + strconv.Itoa(rng.IntN(9)), "a,b"}}}},
				"ids":        {Kind: &featurestorev1.Value_Int64ListValue{Int64ListValue: &featurestorev1.Int64List{Values: []int64{1<<53 + 1, rng.Int64()}}}},
			}
		}},
		{"cust_prod", 30 * time.Minute, func() map[string]*featurestorev1.Value {
			return map[string]*featurestorev1.Value{
				"customer_id": str(w.customers[rng.IntN(10)]), "product_id": i64(w.products[rng.IntN(5)]),
			}
		}, func() map[string]*featurestorev1.Value {
			return map[string]*featurestorev1.Value{"views": maybe(i64(rng.Int64N(1000)))}
		}},
	}
	for _, v := range views {
		used := map[string]bool{}
		keys := map[string]bool{}
		req := &featurestorev1.PushRequest{FeatureView: v.name}
		for range 300 {
			k := v.keys()
			ev := eventTime(v.ttl)
			cr := ev.Add(time.Duration(rng.IntN(3)) * time.Minute)
			id := fmt.Sprint(k, ev, cr)
			if used[id] {
				continue // full ties are left unordered by the contract
			}
			used[id] = true
			keys[fmt.Sprint(k)] = true
			vals := v.vals()
			for name, val := range vals {
				if val == nil {
					delete(vals, name)
				}
			}
			for name, val := range k {
				vals[name] = val
			}
			req.Rows = append(req.Rows, &featurestorev1.PushRow{Values: vals, EventTimestamp: timestamppb.New(ev), CreatedTimestamp: timestamppb.New(cr)})
		}
		if _, err := client.Push(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("push %s: %v", v.name, err)
		}
		w.rows[v.name] = len(keys)
	}
	return w
}

// metric reads one unlabelled sample from the server's /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(httpGet(t, base+"/metrics"))
	if m == nil {
		t.Fatalf("metric %s not exported", name)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return f
}

// canonProto renders an online value for comparison with an exported cell:
// null and empty arrays alike are "null" (an array column stores no null).
func canonProto(v *featurestorev1.Value) string {
	switch x := v.GetKind().(type) {
	case nil:
		return "null"
	case *featurestorev1.Value_Int32Value:
		return strconv.FormatInt(int64(x.Int32Value), 10)
	case *featurestorev1.Value_Int64Value:
		return strconv.FormatInt(x.Int64Value, 10)
	case *featurestorev1.Value_Float32Value:
		return strconv.FormatFloat(float64(x.Float32Value), 'g', -1, 32)
	case *featurestorev1.Value_Float64Value:
		return strconv.FormatFloat(x.Float64Value, 'g', -1, 64)
	case *featurestorev1.Value_StringValue:
		return strconv.Quote(x.StringValue)
	case *featurestorev1.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *featurestorev1.Value_TimestampValue:
		return strconv.FormatInt(x.TimestampValue.AsTime().UnixMicro(), 10)
	case *featurestorev1.Value_Float32ListValue:
		return canonList(x.Float32ListValue.GetValues(), func(f float32) string { return strconv.FormatFloat(float64(f), 'g', -1, 32) })
	case *featurestorev1.Value_Int64ListValue:
		return canonList(x.Int64ListValue.GetValues(), func(n int64) string { return strconv.FormatInt(n, 10) })
	case *featurestorev1.Value_StringListValue:
		return canonList(x.StringListValue.GetValues(), strconv.Quote)
	}
	return fmt.Sprintf("unexpected %T", v.GetKind())
}

func canonList[T any](xs []T, f func(T) string) string {
	if len(xs) == 0 {
		return "null"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// canonArrow renders an exported cell as canonProto does.
func canonArrow(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return "null"
	}
	switch x := a.(type) {
	case *array.Int32:
		return strconv.FormatInt(int64(x.Value(i)), 10)
	case *array.Int64:
		return strconv.FormatInt(x.Value(i), 10)
	case *array.Float32:
		return strconv.FormatFloat(float64(x.Value(i)), 'g', -1, 32)
	case *array.Float64:
		return strconv.FormatFloat(x.Value(i), 'g', -1, 64)
	case *array.String:
		return strconv.Quote(x.Value(i))
	case *array.Boolean:
		return strconv.FormatBool(x.Value(i))
	case *array.Timestamp:
		return strconv.FormatInt(int64(x.Value(i)), 10)
	case *array.List:
		s, e := x.ValueOffsets(i)
		var parts []string
		for j := int(s); j < int(e); j++ {
			parts = append(parts, canonArrow(x.ListValues(), j))
		}
		if len(parts) == 0 {
			return "null"
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	return fmt.Sprintf("unexpected %T", a)
}

// exportAt runs the point-in-time export of refs for entity rows
// (customer, product) all at instant at, and renders each cell.
func exportAt(t *testing.T, c *cli, refs []string, ents [][2]string, at time.Time) [][]string {
	t.Helper()
	ctx := context.Background()
	store, err := offline.Open(ctx, c.server(), offline.Options{Database: c.db})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	av, err := store.Applied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("customer_id,product_id,event_timestamp\n")
	for _, e := range ents {
		fmt.Fprintf(&b, "%s,%s,%s\n", csvQuote(e[0]), e[1], at.Format(time.RFC3339))
	}
	file := filepath.Join(t.TempDir(), "entities.csv")
	writeFile(t, file, b.String())
	resolved, err := av.Repo.ResolveRefs(refs)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := offline.JoinKeys(av.Repo, resolved)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tablefile.Open(file, tablefile.CSV, tablefile.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	set, err := store.UploadEntities(ctx, file, r, offline.EntityOptions{JoinKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Drop(ctx)
	ret, err := store.Retrieve(ctx, av.Repo, set, resolved, offline.RetrieveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ret.Close()
	var out [][]string
	for {
		rec, err := ret.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(rec.NumRows()) {
			var cells []string
			for col := 3; col < int(rec.NumCols()); col++ { // after the entity columns
				cells = append(cells, canonArrow(rec.Column(col), i))
			}
			out = append(out, cells)
		}
		rec.Release()
	}
}

func csvQuote(s string) string {
	if strings.ContainsAny(s, ",\"\n'\\") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// getOnline asks the server for refs of entity rows and renders each
// cell: its value when PRESENT, else "null".
func getOnline(t *testing.T, base string, refs []string, ents [][2]string) [][]string {
	t.Helper()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	req := &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: refs}}}
	for _, e := range ents {
		keys := map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: e[0]}}}
		if e[1] != "" {
			keys["product_id"] = &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: e[1]}}
		}
		req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: keys})
	}
	resp, err := client.GetOnlineFeatures(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("get online features: %v", err)
	}
	var out [][]string
	for _, row := range resp.Msg.GetRows() {
		var cells []string
		for _, v := range row.GetValues() {
			if v.GetStatus() == featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT {
				cells = append(cells, canonProto(v.GetValue()))
			} else {
				cells = append(cells, "null")
			}
		}
		out = append(out, cells)
	}
	return out
}

// TestMaterializeMatchesExport is the online/offline property: after
// materialize, every online answer equals the point-in-time export at the
// same instant, on random data, whether the tier holds everything or a
// byte budget far smaller than the data forces most answers through
// ClickHouse.
func TestMaterializeMatchesExport(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			c := newCLI(t)
			c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": onlineDefs}))
			loader, stopLoader := startServe(t, c, "--warm-start=false")
			w := pushRandomWorld(t, loader, rng)
			if err := stopLoader(); err != nil {
				t.Fatal(err)
			}

			// A fresh server: nothing cached until materialize.
			base, _ := startServe(t, c, "--warm-start=false", "--follow", "1h")
			out := c.ok("materialize", "--server", base)
			for view, n := range w.rows {
				mustContain(t, out, fmt.Sprintf("%s: %d keys loaded (all keys)", view, n))
			}
			// Every customer with rows is answered by the tier alone.
			var known [][2]string
			for _, cu := range w.customers[:len(w.customers)-2] {
				known = append(known, [2]string{cu, ""})
			}
			before := metric(t, base, "tailor_online_read_through_queries_total")
			getOnline(t, base, []string{"cust:orders"}, known)
			if after := metric(t, base, "tailor_online_read_through_queries_total"); after != before {
				t.Errorf("materialized keys caused %v read-through queries", after-before)
			}

			var ents [][2]string
			for range 400 {
				ents = append(ents, [2]string{w.customers[rng.IntN(len(w.customers))], strconv.FormatInt(w.products[rng.IntN(len(w.products))], 10)})
			}
			refs := []string{"cust:*", "prod:*", "cust_prod:views"}
			small, _ := startServe(t, c, "--online-memory", "16KiB")
			for name, srv := range map[string]string{"materialized": base, "16KiB budget": small} {
				at := time.Now().UTC().Truncate(time.Second)
				got := getOnline(t, srv, refs, ents)
				want := exportAt(t, c, refs, ents, at)
				if len(got) != len(want) {
					t.Fatalf("%s: %d online rows, %d exported", name, len(got), len(want))
				}
				bad := 0
				for i := range got {
					if strings.Join(got[i], " | ") != strings.Join(want[i], " | ") {
						if bad++; bad <= 5 {
							t.Errorf("%s: entity %v:\n online %v\n export %v", name, ents[i], got[i], want[i])
						}
					}
				}
				if bad > 0 {
					t.Fatalf("%s: %d of %d rows differ", name, bad, len(got))
				}
			}
			if ev := metric(t, small, "tailor_online_tier_evictions_total"); ev == 0 {
				t.Errorf("a 16KiB tier evicted nothing; the budget test proves nothing")
			}
		})
	}
}

// waitServing polls gRPC health until the server says SERVING.
func waitServing(t *testing.T, base string, within time.Duration) {
	t.Helper()
	health := grpchealth.NewClient(h2cClient(), base, connect.WithGRPC())
	deadline := time.Now().Add(within)
	for {
		st, err := health.Check(context.Background(), &grpchealth.CheckRequest{Service: featurestorev1connect.FeatureServiceName})
		if err == nil && st.Status == grpchealth.StatusServing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after %s: %v %v", within, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWarmStart checks a starting server fills its tier from ClickHouse
// before it reports ready, so its first answers need no read-through.
func TestWarmStart(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": onlineDefs}))
	loader, stopLoader := startServe(t, c, "--warm-start=false")
	w := pushRandomWorld(t, loader, rand.New(rand.NewPCG(3, 3)))
	if err := stopLoader(); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, c)
	waitServing(t, base, 30*time.Second)
	if n := metric(t, base, "tailor_online_tier_entries"); int(n) != w.rows["cust"]+w.rows["prod"]+w.rows["cust_prod"] {
		t.Errorf("warm start cached %v entries, want every key of every view (%v)", n, w.rows)
	}
	var known [][2]string
	for _, cu := range w.customers[:len(w.customers)-2] {
		known = append(known, [2]string{cu, ""})
	}
	getOnline(t, base, []string{"cust:*"}, known)
	if n := metric(t, base, "tailor_online_read_through_queries_total"); n != 0 {
		t.Errorf("%v read-through queries after a warm start", n)
	}
}

// TestMaterializeIncremental checks --incremental loads only the keys with
// rows stored since the last run, and --views/--start/--end select.
func TestMaterializeIncremental(t *testing.T) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{"defs.yaml": onlineDefs})
	c.ok("apply", dir)
	now := time.Now().UTC().Truncate(time.Second)
	// Rows stored a minute ago, well before the first run's watermark.
	c.exec(fmt.Sprintf(`INSERT INTO %s.fv_cust (customer_id, event_ts, created_ts, orders, _inserted_at)
		SELECT concat('c', toString(number)), toDateTime(%d) - number * 60, toDateTime(%d), number, now() - 60 FROM system.numbers LIMIT 50`,
		c.db, now.Unix(), now.Unix()))
	base, _ := startServe(t, c, "--warm-start=false", "--follow", "1h")
	mustContain(t, c.ok("materialize", "--server", base, "--views", "cust"), "cust: 50 keys loaded (all keys)")
	// The window keeps keys whose latest row is 10..19 minutes old.
	mustContain(t, c.ok("materialize", "--server", base, "--views", "cust",
		"--start", now.Add(-19*time.Minute).Format(time.RFC3339), "--end", now.Add(-10*time.Minute).Format(time.RFC3339)),
		"cust: 10 keys loaded (all keys)")
	file := filepath.Join(dir, "new.csv")
	writeFile(t, file, "customer_id,event_ts,orders\nc1,"+now.Format(time.RFC3339)+",1001\nnew,"+now.Format(time.RFC3339)+",7\n")
	c.ok("ingest", "cust", file, "--allow-missing-features")
	mustContain(t, c.ok("materialize", "--server", base, "--views", "cust", "--incremental"), "cust: 2 keys loaded (keys changed since the last run)")
	// A view never materialized is loaded whole, even incrementally.
	mustContain(t, c.ok("materialize", "--server", base, "--views", "prod", "--incremental"), "prod: 0 keys loaded (all keys)")

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--views", "cust,nope"}, `"nope"`},
		{[]string{"--start", "yesterday"}, "--start"},
		{[]string{"--start", "2025-01-02", "--end", "2025-01-01"}, "before start"},
	} {
		mustContain(t, c.fails(append([]string{"materialize", "--server", base}, bad.args...)...), bad.want)
	}
}

// TestReplicasConverge runs two servers on one ClickHouse: a push through
// one is answered at once by it and within 2 s by the other, which had
// cached the old value; so is a file ingested behind both.
func TestReplicasConverge(t *testing.T) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{"defs.yaml": onlineDefs})
	c.ok("apply", dir)
	a, _ := startServe(t, c)
	b, _ := startServe(t, c)
	waitServing(t, a, 30*time.Second)
	waitServing(t, b, 30*time.Second)
	ctx := context.Background()
	orders := func(base, cust string) string {
		return getOnline(t, base, []string{"cust:orders"}, [][2]string{{cust, ""}})[0][0]
	}
	// Both cache "no row" for c1 and c2.
	for _, srv := range []string{a, b} {
		for _, cu := range []string{"c1", "c2"} {
			if got := orders(srv, cu); got != "null" {
				t.Fatalf("orders of %s before any row: %s", cu, got)
			}
		}
	}
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), a)
	push := func(n int64) {
		_, err := client.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "cust", Rows: []*featurestorev1.PushRow{{
			Values: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "c1"}}, "orders": {Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}},
			// Event times a second apart: tailor stores whole seconds, and
			// two rows of one key in the same second (and created in the
			// same second) tie, so either may be the latest.
			EventTimestamp: timestamppb.New(time.Now().Add(-time.Minute + time.Duration(n)*time.Second)),
		}}}))
		if err != nil {
			t.Fatal(err)
		}
	}
	within := func(srv, cust, want string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			got := orders(srv, cust)
			if got == want {
				return time.Since(start)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("%s still answers orders=%s for %s 2s later, want %s", srv, got, cust, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, n := range []int64{11, 12} {
		push(n)
		if got := orders(a, "c1"); got != strconv.FormatInt(n, 10) {
			t.Fatalf("the pushing server answers %s right after the push, want %d", got, n)
		}
		t.Logf("push %d reached the other replica after %s", n, within(b, "c1", strconv.FormatInt(n, 10)))
	}
	file := filepath.Join(dir, "c2.csv")
	writeFile(t, file, "customer_id,event_ts,orders\nc2,"+time.Now().UTC().Format(time.RFC3339)+",99\n")
	c.ok("ingest", "cust", file, "--allow-missing-features")
	for _, srv := range []string{a, b} {
		t.Logf("ingest reached %s after %s", srv, within(srv, "c2", "99"))
	}
}
