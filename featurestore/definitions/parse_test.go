package definitions

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fullExample = `entities:
  - name: customer
    join_key: customer_id
    type: string
  - name: product
    join_key: product_id
    type: int64
feature_views:
  - name: customer_stats
    entities: [customer]
    ttl: 48h
    source:
      table: shop.customer_stats
      timestamp_field: event_ts
      created_timestamp_field: created_ts
    features:
      - name: orders_7d
        type: int64
      - {name: embedding, type: array<float32>}
    tags: {owner: crm}
  - name: product_stats
    entities: [product]
    features:
      - {name: popularity, type: float32}
      - {name: price, type: float64}
feature_services:
  - name: nba_inputs
    features: ["customer_stats:*", "product_stats:popularity"]
`

func TestParseFullExample(t *testing.T) {
	repo, err := Parse(map[string][]byte{"repo/defs.yaml": []byte(fullExample)})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := repo.View("customer_stats")
	if !ok {
		t.Fatal("customer_stats missing")
	}
	if v.TTL != 48*time.Hour || !v.External() || v.Source.Table != "shop.customer_stats" || v.Tags["owner"] != "crm" {
		t.Errorf("customer_stats = %+v", v)
	}
	if v.Pos.String() != "repo/defs.yaml:9" || v.Features[1].Pos.Line != 19 {
		t.Errorf("positions: view %s, feature line %d", v.Pos, v.Features[1].Pos.Line)
	}
	p, _ := repo.View("product_stats")
	if p.TTL != 0 || p.External() || p.Source.TimestampField != "event_ts" || p.Source.CreatedTimestampField != "created_ts" {
		t.Errorf("defaults of a tailor-owned view: %+v", p.Source)
	}
	refs, err := repo.ResolveService("nba_inputs")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range refs {
		got = append(got, r.String()+" "+string(r.Type))
	}
	want := []string{"customer_stats:orders_7d int64", "customer_stats:embedding array<float32>", "product_stats:popularity float32"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("service features = %v, want %v", got, want)
	}
}

func TestResolveRefs(t *testing.T) {
	repo, err := Parse(map[string][]byte{"a.yaml": []byte(fullExample)})
	if err != nil {
		t.Fatal(err)
	}
	refs, err := repo.ResolveRefs([]string{"product_stats:price", "product_stats:*", "customer_stats:orders_7d"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range refs {
		got = append(got, r.String())
	}
	want := []string{"product_stats:price", "product_stats:popularity", "customer_stats:orders_7d"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("refs = %v, want %v (request order, * in definition order, each once)", got, want)
	}
	for _, bad := range []string{"nope:x", "product_stats:nope", "product_stats", ":x", "a:b:c"} {
		_, err := repo.ResolveRefs([]string{bad})
		var re *RefError
		if !errors.As(err, &re) || re.Ref != bad || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ResolveRefs(%q) error = %v, want a RefError naming it", bad, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const ent = "entities:\n  - {name: customer, join_key: customer_id, type: string}\n"
	view := func(body string) string {
		return ent + "feature_views:\n  - name: v\n    entities: [customer]\n" + body
	}
	cases := []struct {
		name, yaml string
		line       int
		object     string
		msg        string
	}{
		{"unknown top-level key", "entitys: []\n", 1, "", `unknown key "entitys"`},
		{"unknown entity key", "entities:\n  - name: c\n    join_key: c_id\n    type: string\n    color: red\n", 5, `entity "c"`, `unknown key "color"`},
		{"missing join key", "entities:\n  - name: c\n    type: string\n", 2, `entity "c"`, "join_key is required"},
		{"bad key type", "entities:\n  - {name: c, join_key: c_id, type: bool}\n", 2, `entity "c"`, `"bool"`},
		{"bad identifier", "entities:\n  - {name: 9c, join_key: c_id, type: string}\n", 2, `entity "9c"`, "not an identifier"},
		{"reserved identifier", "entities:\n  - {name: c, join_key: _id, type: string}\n", 2, `entity "c"`, "reserves"},
		{"duplicate entity", ent + "  - {name: customer, join_key: x, type: string}\n", 3, `entity "customer"`, "defined twice (first at f.yaml:2)"},
		{"unknown entity", ent + "feature_views:\n  - name: v\n    entities: [cust]\n    features: [{name: f, type: int64}]\n", 4, `feature_view "v"`, `unknown entity "cust"`},
		{"bad feature type", view("    features:\n      - {name: f, type: decimal}\n"), 7, `feature_view "v"`, `unknown type "decimal"`},
		{"duplicate feature", view("    features:\n      - {name: f, type: int64}\n      - {name: f, type: int64}\n"), 8, `feature_view "v"`, `feature "f" defined twice`},
		{"feature named like the key", view("    features:\n      - {name: customer_id, type: int64}\n"), 7, `feature_view "v"`, "join key"},
		{"feature named like the timestamp", view("    features:\n      - {name: event_ts, type: int64}\n"), 7, `feature_view "v"`, "event timestamp"},
		{"bad ttl", view("    ttl: 2d\n    features: [{name: f, type: int64}]\n"), 6, `feature_view "v"`, `ttl "2d"`},
		{"negative ttl", view("    ttl: -1h\n    features: [{name: f, type: int64}]\n"), 6, `feature_view "v"`, "negative"},
		{"no features", view("    features: []\n"), 6, `feature_view "v"`, "at least one feature"},
		{"features not a list", view("    features: f\n"), 6, "", "expected a list"},
		{"bad source table", view("    source: {table: \"a.b.c\"}\n    features: [{name: f, type: int64}]\n"), 6, `feature_view "v"`, `"a.b.c"`},
		{"unknown source key", view("    source: {tabel: x}\n    features: [{name: f, type: int64}]\n"), 6, `feature_view "v" source`, `unknown key "tabel"`},
		{"entity listed twice", ent + "feature_views:\n  - name: v\n    entities: [customer, customer]\n    features: [{name: f, type: int64}]\n", 4, `feature_view "v"`, "listed twice"},
		{"service with missing feature", view("    features: [{name: f, type: int64}]\nfeature_services:\n  - name: s\n    features: [\"v:g\"]\n"), 8, `feature_service "s"`, `"v:g"`},
		{"service with missing view", view("    features: [{name: f, type: int64}]\nfeature_services:\n  - name: s\n    features: [\"w:*\"]\n"), 8, `feature_service "s"`, `unknown feature view "w"`},
		{"tags not strings", view("    features: [{name: f, type: int64}]\n    tags: {a: [1]}\n"), 7, `feature_view "v"`, "tags"},
		{"aggregations without a table", view("    aggregations: [{name: n, function: count, window: 30d}]\n"), 6, `feature_view "v"`, "source.table"},
		{"aggregations and features", view("    source: {table: orders}\n    features: [{name: f, type: int64}]\n    aggregations: [{name: n, function: count, window: 30d}]\n"), 7, `feature_view "v"`, "not both"},
		{"aggregations with a ttl", view("    source: {table: orders}\n    ttl: 1h\n    aggregations: [{name: n, function: count, window: 30d}]\n"), 7, `feature_view "v"`, "ttl does not apply"},
		{"unknown function", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: median, column: amount, window: 30d}\n"), 8, `feature_view "v"`, `unknown function "median"`},
		{"sum without a column", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: sum, window: 30d}\n"), 8, `feature_view "v"`, "sum needs a column"},
		{"count with a column", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: count, column: amount, window: 30d}\n"), 8, `feature_view "v"`, "count takes no column"},
		{"no window", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: count}\n"), 8, `feature_view "v"`, "window is required"},
		{"bad window", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: count, window: 30 days}\n"), 8, `feature_view "v"`, `window "30 days"`},
		{"sub-second window", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: count, window: 1500ms}\n"), 8, `feature_view "v"`, "whole seconds"},
		{"share without where", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: share, window: 30d}\n"), 8, `feature_view "v"`, "share needs where"},
		{"last without a type", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: last, column: product_id, window: 30d}\n"), 8, `feature_view "v"`, "needs a type"},
		{"array type", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: last, column: p, type: array<string>, window: 30d}\n"), 8, `feature_view "v"`, "not a scalar"},
		{"duplicate aggregation", view("    source: {table: orders, timestamp_field: ts}\n    aggregations:\n      - {name: n, function: count, window: 30d}\n      - {name: n, function: count, window: 7d}\n"), 9, `feature_view "v"`, `feature "n" defined twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(map[string][]byte{"f.yaml": []byte(tc.yaml)})
			if err == nil {
				t.Fatal("no error")
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if de.Pos.File != "f.yaml" || de.Pos.Line != tc.line || de.Object != tc.object || !strings.Contains(de.Msg, tc.msg) {
				t.Errorf("error = %q (pos %s, object %q), want line %d, object %q, message containing %q", err, de.Pos, de.Object, tc.line, tc.object, tc.msg)
			}
			if !strings.Contains(err.Error(), "f.yaml:") {
				t.Errorf("error %q does not name file:line", err)
			}
		})
	}
}

func TestParseAggregations(t *testing.T) {
	repo, err := Parse(map[string][]byte{"f.yaml": []byte(`entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: orders
    entities: [customer]
    source: {table: retail_orders, timestamp_field: ts}
    aggregations:
      - {name: orders_30d, function: count, window: 30d}
      - {name: spend_7d, function: sum, column: amount, window: 7d}
      - {name: last_product, function: last, column: product_id, type: string, window: 12h}
      - {name: email_share, function: share, where: "channel = 'email'", window: 90m}
`)})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := repo.View("orders")
	if !v.Windowed() || v.LongestWindow() != 30*24*time.Hour || v.TTL != 0 || v.Source.CreatedTimestampField != "" {
		t.Fatalf("view %+v", v)
	}
	want := []struct {
		name string
		typ  ValueType
		agg  Aggregation
	}{
		{"orders_30d", Int64, Aggregation{Function: AggCount, Window: 30 * 24 * time.Hour}},
		{"spend_7d", Float64, Aggregation{Function: AggSum, Column: "amount", Window: 7 * 24 * time.Hour}},
		{"last_product", String, Aggregation{Function: AggLast, Column: "product_id", Window: 12 * time.Hour}},
		{"email_share", Float64, Aggregation{Function: AggShare, Where: "channel = 'email'", Window: 90 * time.Minute}},
	}
	for i, w := range want {
		f := v.Features[i]
		if f.Name != w.name || f.Type != w.typ || f.Agg == nil || *f.Agg != w.agg || f.Pos.Line != 8+i {
			t.Errorf("feature %d = %+v (agg %+v), want %+v", i, f, f.Agg, w)
		}
	}
	refs, err := repo.ResolveRefs([]string{"orders:*"})
	if err != nil || len(refs) != 4 {
		t.Fatalf("refs %v, %v", refs, err)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse(map[string][]byte{
		"a.yaml": []byte("entities:\n  - {name: c, join_key: c_id, type: float}\n"),
		"b.yaml": []byte("feature_views:\n  - {name: v, entities: [c], features: [{name: f, type: nope}]}\n"),
	})
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 2 {
		t.Fatalf("want both problems, got %v", err)
	}
}

func TestSyntaxErrorNamesFile(t *testing.T) {
	_, err := Parse(map[string][]byte{"bad.yaml": []byte("entities: [\n")})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("error = %v", err)
	}
}

func TestJSONRoundTripAndDigest(t *testing.T) {
	repo, err := Parse(map[string][]byte{"a.yaml": []byte(fullExample)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(repo)
	if err != nil {
		t.Fatal(err)
	}
	var back Repo
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, repo) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, *repo)
	}
	// Moving definitions between files and lines keeps the digest; a real
	// change does not.
	parts := strings.SplitN(fullExample, "feature_views:", 2)
	moved, err := Parse(map[string][]byte{"x/e.yaml": []byte("\n\n" + parts[0]), "x/v.yaml": []byte("feature_views:" + parts[1])})
	if err != nil {
		t.Fatal(err)
	}
	if moved.Digest() != repo.Digest() {
		t.Error("digest changed when definitions moved between files")
	}
	changed, _ := Parse(map[string][]byte{"a.yaml": []byte(strings.Replace(fullExample, "48h", "24h", 1))})
	if changed.Digest() == repo.Digest() {
		t.Error("digest did not change with the ttl")
	}
}
