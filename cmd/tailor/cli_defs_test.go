package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestApplyRejectsBadDefinitions: each broken repo is refused with the file
// and line of the problem, and nothing is created.
func TestApplyRejectsBadDefinitions(t *testing.T) {
	const ent = "entities:\n  - {name: customer, join_key: customer_id, type: string}\n"
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"unknown entity", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [cust]\n    features: [{name: f, type: int64}]\n"},
			[]string{"v.yaml:2", `"cust"`}},
		{"unknown key", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    ttll: 1h\n    features: [{name: f, type: int64}]\n"},
			[]string{"v.yaml:4", "ttll"}},
		{"bad type", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    features:\n      - {name: f, type: int65}\n"},
			[]string{"v.yaml:5", "int65"}},
		{"bad ttl", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    ttl: 2 days\n    features: [{name: f, type: int64}]\n"},
			[]string{"v.yaml:4", "2 days"}},
		{"duplicate view", map[string]string{"e.yaml": ent, "a.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    features: [{name: f, type: int64}]\n",
			"b.yaml": "\nfeature_views:\n  - name: v\n    entities: [customer]\n    features: [{name: f, type: int64}]\n"},
			[]string{"b.yaml:3", "a.yaml:2", `"v"`}},
		{"bad identifier", map[string]string{"e.yaml": "entities:\n  - {name: customer, join_key: customer-id, type: string}\n"},
			[]string{"e.yaml:2", "customer-id"}},
		{"missing feature in service", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    features: [{name: f, type: int64}]\nfeature_services:\n  - name: s\n    features: [\"v:g\"]\n"},
			[]string{"v.yaml:6", `"v:g"`}},
		{"bad key type", map[string]string{"e.yaml": "entities:\n  - {name: customer, join_key: customer_id, type: float64}\n"},
			[]string{"e.yaml:2", "float64"}},
		{"missing external table", map[string]string{"e.yaml": ent, "v.yaml": "feature_views:\n  - name: v\n    entities: [customer]\n    source: {table: nowhere.stats}\n    features: [{name: f, type: int64}]\n"},
			[]string{"v.yaml:2", "nowhere.stats"}},
		{"yaml syntax", map[string]string{"e.yaml": "entities: [\n"}, []string{"e.yaml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			dir := writeFiles(t, tc.files)
			msg := c.fails("apply", dir)
			mustContain(t, msg, tc.want...)
			mustContain(t, c.fails("plan", dir), tc.want...)
			if got := c.ok("views", "list"); !strings.Contains(got, "No definitions applied") {
				t.Errorf("a refused apply changed the store: %s", got)
			}
			if tables := c.sql("SELECT name FROM system.tables WHERE database = '" + c.db + "' AND name LIKE 'fv_%'"); tables != "" {
				t.Errorf("a refused apply created tables: %s", tables)
			}
		})
	}
}

// TestApplyEvolution: adding a feature adds a column and keeps the data;
// changing a key or a type is refused with the reason, changing nothing.
func TestApplyEvolution(t *testing.T) {
	c, _ := tourSetup(t)
	before := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats")

	added := strings.Replace(tourDefs, "      - {name: segment, type: string}\n", "      - {name: segment, type: string}\n      - {name: visits_30d, type: array<int64>}\n", 1)
	dir := writeFiles(t, map[string]string{"defs.yaml": added})
	mustContain(t, c.ok("plan", dir), "visits_30d")
	mustContain(t, c.ok("apply", dir), "visits_30d", "version 2")
	mustContain(t, c.sql("SELECT type FROM system.columns WHERE database = '"+c.db+"' AND table = 'fv_customer_stats' AND name = 'visits_30d'"), "Array(Int64)")
	if after := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats"); after != before {
		t.Fatalf("rows changed from %s to %s", before, after)
	}

	refusals := []struct {
		name, from, to string
		want           []string
	}{
		{"key type", "{name: product, join_key: product_id, type: int64}", "{name: product, join_key: product_id, type: string}", []string{"defs.yaml:3", `"product"`, "int64", "string"}},
		{"join key", "{name: customer, join_key: customer_id, type: string}", "{name: customer, join_key: cust_id, type: string}", []string{"defs.yaml:2", "customer_id", "cust_id"}},
		{"feature type", "{name: orders_7d, type: int64}", "{name: orders_7d, type: float64}", []string{"defs.yaml:", `"orders_7d"`, "int64", "float64"}},
		{"view key", "    entities: [product]\n", "    entities: [customer]\n", []string{`"product_stats"`, "product_id", "customer_id"}},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			changed := strings.Replace(added, r.from, r.to, 1)
			if changed == added {
				t.Fatalf("test bug: %q not found", r.from)
			}
			d := writeFiles(t, map[string]string{"defs.yaml": changed})
			mustContain(t, c.fails("apply", d), append(r.want, "cannot change")...)
			mustContain(t, c.ok("plan", dir), "No changes")
		})
	}
	mustContain(t, c.ok("views", "list"), "definitions version 2")
}

// TestIngestIsAllOrNothing: a bad cell anywhere in a file, even after
// several insert blocks went out, names file, row, column and value and
// leaves nothing of the file visible.
func TestIngestIsAllOrNothing(t *testing.T) {
	c, _ := tourSetup(t)
	count := func() string { return c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats") }
	before := count()
	var good strings.Builder
	good.WriteString("customer_id,event_ts,orders_7d,spend,segment\n")
	for range 50 {
		good.WriteString("c9,2024-02-01 00:00:00,1,2.5,x\n")
	}
	cases := []struct {
		name, content string
		want          []string
	}{
		{"bad integer late in the file", good.String() + "c9,2024-02-01 00:00:00,abc,2.5,x\n", []string{"row 51", `"orders_7d"`, `"abc"`}},
		{"bad timestamp", "customer_id,event_ts,orders_7d,spend,segment\nc9,2024-13-01,1,1,x\n", []string{"row 1", `"event_ts"`, `"2024-13-01"`}},
		{"bad float", "customer_id,event_ts,orders_7d,spend,segment\nc9,2024-01-01 00:00:00,1,1.2.3,x\n", []string{"row 1", `"spend"`, `"1.2.3"`}},
		{"empty key", "customer_id,event_ts,orders_7d,spend,segment\n,2024-01-01 00:00:00,1,1,x\n", []string{"row 1", `"customer_id"`}},
		{"missing key column", "event_ts,orders_7d,spend,segment\n2024-01-01 00:00:00,1,1,x\n", []string{`"customer_id"`}},
		{"extra column", "customer_id,event_ts,orders_7d,spend,segment,oops\nc9,2024-01-01 00:00:00,1,1,x,1\n", []string{`"oops"`, "--ignore-extra-columns"}},
		{"missing feature column", "customer_id,event_ts,orders_7d,spend\nc9,2024-01-01 00:00:00,1,1\n", []string{"segment", "--allow-missing-features"}},
		{"ragged row", "customer_id,event_ts,orders_7d,spend,segment\nc9,2024-01-01 00:00:00,1\n", []string{"bad.csv"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"bad.csv": tc.content})
			file := filepath.Join(dir, "bad.csv")
			msg := c.fails("ingest", "customer_stats", file, "--batch-rows", "7")
			mustContain(t, msg, append(tc.want, file)...)
			if got := count(); got != before {
				t.Fatalf("rows went from %s to %s after a failed load", before, got)
			}
		})
	}
	mustContain(t, c.fails("ingest", "nope", "x.csv"), `"nope"`)
	if left := c.sql("SELECT name FROM system.tables WHERE database = '" + c.db + "' AND name LIKE '\\_stage%'"); left != "" {
		t.Errorf("staging tables left behind: %s", left)
	}
	// The flags turn the two schema refusals into loads.
	dir := writeFiles(t, map[string]string{"ok.csv": "customer_id,event_ts,orders_7d,oops\nc9,2024-01-01 00:00:00,5,1\n"})
	c.ok("ingest", "customer_stats", filepath.Join(dir, "ok.csv"), "--ignore-extra-columns", "--allow-missing-features")
	mustContain(t, c.sql("SELECT orders_7d, spend FROM "+c.db+".fv_customer_stats WHERE customer_id = 'c9'"), "5\tNULL")
}

// TestIngestParquetAndArrow loads the same rows from the typed formats.
func TestIngestParquetAndArrow(t *testing.T) {
	c, dir := tourSetup(t)
	// Export a file of each format from the CSV rows, then load it into a
	// second view of the same shape: the typed readers feed ingest.
	for _, format := range []string{"parquet", "arrow"} {
		out := filepath.Join(dir, "stats."+format)
		c.ok("export", "--entities-sql", "SELECT customer_id, event_ts AS event_timestamp, event_ts, created_ts FROM "+c.db+".fv_customer_stats",
			"--features", "customer_stats:*", "--out", out)
		before := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats")
		if _, _, err := c.run("ingest", "customer_stats", out); err != nil {
			// event_timestamp is not a column of the view.
			mustContain(t, err.Error(), `"event_timestamp"`)
		}
		c.ok("ingest", "customer_stats", out, "--ignore-extra-columns")
		after := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats")
		if before == after {
			t.Fatalf("%s ingest added no rows", format)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "stats.parquet")); err != nil {
		t.Fatal(err)
	}
}

// TestEveryFeatureTypeThroughCSV loads every feature type from CSV text and
// exports it back: the values come out as written.
func TestEveryFeatureTypeThroughCSV(t *testing.T) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{
		"repo/defs.yaml": `entities: [{name: account, join_key: account_id, type: int64}]
feature_views:
  - name: all_types
    entities: [account]
    features:
      - {name: i32, type: int32}
      - {name: i64, type: int64}
      - {name: f32, type: float32}
      - {name: f64, type: float64}
      - {name: s, type: string}
      - {name: b, type: bool}
      - {name: ts, type: timestamp}
      - {name: af, type: array<float32>}
      - {name: ai, type: array<int64>}
      - {name: as, type: array<string>}
`,
		"data.txt": "account_id,event_ts,i32,i64,f32,f64,s,b,ts,af,ai,as\n" +
			"-9223372036854775808,2024-01-01 00:00:00,-2147483648,9223372036854775807,0.1,0.30000000000000004,\"x, \"\"y\"\"\",true,2024-01-01T10:00:00+02:00,\"[1.5,0.1]\",[9007199254740993],\"[\"\"a\"\",\"\"b,c\"\"]\"\n" +
			"7,1704067200,,,,,,,,,,\n",
		"e.csv": "account_id,event_timestamp\n-9223372036854775808,2024-01-02 00:00:00\n7,2024-01-02 00:00:00\n",
	})
	c.ok("apply", filepath.Join(dir, "repo"))
	// --format reads a file whose extension says nothing.
	mustContain(t, c.fails("ingest", "all_types", filepath.Join(dir, "data.txt")), "--format")
	c.ok("ingest", "all_types", filepath.Join(dir, "data.txt"), "--format", "csv")
	out := filepath.Join(dir, "out.csv")
	c.ok("export", "--entities", filepath.Join(dir, "e.csv"), "--features", "all_types:*", "--out", out)
	want := "account_id,event_timestamp,i32,i64,f32,f64,s,b,ts,af,ai,as\n" +
		"-9223372036854775808,2024-01-02T00:00:00Z,-2147483648,9223372036854775807,0.1,0.30000000000000004,\"x, \"\"y\"\"\",true,2024-01-01T08:00:00Z,\"[1.5,0.1]\",[9007199254740993],\"[\"\"a\"\",\"\"b,c\"\"]\"\n" +
		"7,2024-01-02T00:00:00Z,,,,,,,,[],[],[]\n"
	if got := readFile(t, out); got != want {
		t.Fatalf("round trip:\n%s\nwant:\n%s", got, want)
	}
	// Out-of-range and malformed values of each kind are refused.
	bad := map[string]string{
		"i32 overflow":  "1,2024-01-01 00:00:00,2147483648,,,,,,,,,",
		"bool":          "1,2024-01-01 00:00:00,,,,,,maybe,,,,",
		"array":         "1,2024-01-01 00:00:00,,,,,,,,\"[1,\",,",
		"array element": "1,2024-01-01 00:00:00,,,,,,,,\"[\"\"x\"\"]\",,",
		"timestamp":     "1,2024-01-01 00:00:00,,,,,,,1e9,,,",
	}
	for name, row := range bad {
		t.Run(name, func(t *testing.T) {
			d := writeFiles(t, map[string]string{"bad.csv": "account_id,event_ts,i32,i64,f32,f64,s,b,ts,af,ai,as\n" + row + "\n"})
			mustContain(t, c.fails("ingest", "all_types", filepath.Join(d, "bad.csv")), "row 1")
		})
	}
}
