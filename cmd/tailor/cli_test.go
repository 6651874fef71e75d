package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/tablefile"
)

const tourDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: customer_stats
    entities: [customer]
    ttl: 48h
    features:
      - {name: orders_7d, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
  - name: product_stats
    entities: [product]
    ttl: 0
    features:
      - {name: popularity, type: float32}
feature_services:
  - name: svc
    features: ["customer_stats:*", "product_stats:popularity"]
`

// Two rows of c1 tie on event_ts: the later created_ts wins. spend is null
// in one row; c2's segment is empty (null).
const tourCustomerStats = `customer_id,event_ts,created_ts,orders_7d,spend,segment
c1,2024-01-01 00:00:00,2024-01-01 00:00:00,1,10.5,gold
c1,2024-01-02 00:00:00,2024-01-02 00:00:00,2,,silver
c1,2024-01-02 00:00:00,2024-01-02 01:00:00,3,0.1,bronze
c2,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,7,1e+21,
`

const tourProductStats = `product_id,event_ts,popularity
9007199254740993,1704067200,0.25
`

const tourEntities = `customer_id,product_id,event_timestamp,label
c1,9007199254740993,2024-01-02 12:00:00,1
c1,9007199254740993,2024-01-01 12:00:00,0
c1,9007199254740993,2024-01-04 00:00:00,1
c1,9007199254740993,2024-01-04 00:00:01,1
c2,9007199254740994,2024-01-01 00:00:00,0
c3,9007199254740993,2023-12-31 00:00:00,1
`

// The answer worked out by hand from the rule in DESIGN.md: row 3 sits
// exactly on the 48h ttl bound (inclusive), row 4 one second past it.
const tourWant = `customer_id,product_id,event_timestamp,label,orders_7d,spend,segment,popularity
c1,9007199254740993,2024-01-02T12:00:00Z,1,3,0.1,bronze,0.25
c1,9007199254740993,2024-01-01T12:00:00Z,0,1,10.5,gold,0.25
c1,9007199254740993,2024-01-04T00:00:00Z,1,3,0.1,bronze,0.25
c1,9007199254740993,2024-01-04T00:00:01Z,1,,,,0.25
c2,9007199254740994,2024-01-01T00:00:00Z,0,7,1e+21,,
c3,9007199254740993,2023-12-31T00:00:00Z,1,,,,
`

func tourSetup(t *testing.T) (*cli, string) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{
		"repo/defs.yaml":          tourDefs,
		"data/customer_stats.csv": tourCustomerStats,
		"data/product_stats.csv":  tourProductStats,
		"data/entities.csv":       tourEntities,
	})
	c.ok("apply", filepath.Join(dir, "repo"))
	c.ok("ingest", "customer_stats", filepath.Join(dir, "data/customer_stats.csv"))
	c.ok("ingest", "product_stats", filepath.Join(dir, "data/product_stats.csv"))
	return c, dir
}

func TestTourApplyIngestExport(t *testing.T) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{
		"repo/defs.yaml":          tourDefs,
		"data/customer_stats.csv": tourCustomerStats,
		"data/product_stats.csv":  tourProductStats,
		"data/entities.csv":       tourEntities,
	})
	repo := filepath.Join(dir, "repo")

	plan := c.ok("plan", repo)
	mustContain(t, plan, `+ entity "customer"`, `+ feature_view "customer_stats"`, `+ feature_service "svc"`)
	if got := c.ok("views", "list"); !strings.Contains(got, "No definitions applied") {
		t.Fatalf("plan changed something: views list says\n%s", got)
	}
	mustContain(t, c.ok("apply", repo), "Applied definitions version 1")
	mustContain(t, c.ok("apply", repo), "No changes", "version 1")
	mustContain(t, c.ok("plan", repo), "No changes")
	mustContain(t, c.ok("views", "list"), "customer_stats", "product_stats", "48h0m0s")
	mustContain(t, c.ok("views", "describe", "customer_stats"), "orders_7d", "float64", "customer_id (entity customer, string)", "defs.yaml:")

	mustContain(t, c.ok("ingest", "customer_stats", filepath.Join(dir, "data/customer_stats.csv")), "4 rows")
	mustContain(t, c.ok("ingest", "product_stats", filepath.Join(dir, "data/product_stats.csv")), "1 rows")

	ents := filepath.Join(dir, "data/entities.csv")
	csvOut := filepath.Join(dir, "out.csv")
	c.ok("export", "--entities", ents, "--service", "svc", "--out", csvOut)
	if got := readFile(t, csvOut); got != tourWant {
		t.Fatalf("CSV export:\n%s\nwant:\n%s", got, tourWant)
	}
	// The same request by feature references gives the same bytes.
	csvOut2 := filepath.Join(dir, "out2.csv")
	c.ok("export", "--entities", ents, "--features", "customer_stats:*,product_stats:popularity", "--out", csvOut2)
	if readFile(t, csvOut2) != tourWant {
		t.Fatalf("export by --features differs from --service")
	}

	for _, format := range []string{"parquet", "arrow"} {
		t.Run(format, func(t *testing.T) {
			out := filepath.Join(dir, "out."+format)
			c.ok("export", "--entities", ents, "--service", "svc", "--out", out)
			schema, text := toCSV(t, out)
			if text != tourWant {
				t.Fatalf("%s export, as CSV:\n%s\nwant:\n%s", format, text, tourWant)
			}
			wantTypes := map[string]arrow.Type{
				"customer_id": arrow.STRING, "product_id": arrow.INT64, "event_timestamp": arrow.TIMESTAMP,
				"label": arrow.INT64, "orders_7d": arrow.INT64, "spend": arrow.FLOAT64, "segment": arrow.STRING, "popularity": arrow.FLOAT32,
			}
			for _, f := range schema.Fields() {
				if f.Type.ID() != wantTypes[f.Name] {
					t.Errorf("column %s is %s, want %s", f.Name, f.Type, wantTypes[f.Name])
				}
			}
		})
	}

	// A typed export serves as the entity file of the next one: keys,
	// timestamps and labels are read from Parquet and Arrow too.
	for _, format := range []string{"parquet", "arrow"} {
		again := filepath.Join(dir, "again-"+format+".csv")
		c.ok("export", "--entities", filepath.Join(dir, "out."+format), "--features", "customer_stats:orders_7d", "--full-names", "--out", again)
		lines := strings.Split(strings.TrimSpace(readFile(t, again)), "\n")
		wantLines := strings.Split(strings.TrimSpace(tourWant), "\n")
		if len(lines) != len(wantLines) || lines[0] != wantLines[0]+",customer_stats__orders_7d" {
			t.Fatalf("re-export from %s:\n%s", format, strings.Join(lines, "\n"))
		}
		for i := 1; i < len(lines); i++ {
			orders := strings.Split(wantLines[i], ",")[4]
			if lines[i] != wantLines[i]+","+orders {
				t.Errorf("re-export from %s, row %d: %q, want %q", format, i, lines[i], wantLines[i]+","+orders)
			}
		}
	}

	// --full-names and --format override the extension.
	full := filepath.Join(dir, "full.txt")
	c.ok("export", "--entities", ents, "--features", "customer_stats:orders_7d", "--full-names", "--format", "csv", "--out", full)
	if first := strings.SplitN(readFile(t, full), "\n", 2)[0]; first != "customer_id,product_id,event_timestamp,label,customer_stats__orders_7d" {
		t.Fatalf("--full-names header = %q", first)
	}
}

func TestExportEntitiesFromSQL(t *testing.T) {
	c, dir := tourSetup(t)
	out := filepath.Join(dir, "sql.csv")
	c.ok("export", "--entities-sql", `SELECT customer_id, toDateTime('2024-01-02 12:00:00') AS event_timestamp, n
		FROM (SELECT arrayJoin(['c2', 'c1', 'zz']) AS customer_id, 7 AS n)`, "--features", "customer_stats:orders_7d,customer_stats:segment", "--out", out)
	want := "customer_id,event_timestamp,n,orders_7d,segment\n" +
		"c2,2024-01-02T12:00:00Z,7,7,\n" +
		"c1,2024-01-02T12:00:00Z,7,3,bronze\n" +
		"zz,2024-01-02T12:00:00Z,7,,\n"
	if got := readFile(t, out); got != want {
		t.Fatalf("export from SQL:\n%s\nwant:\n%s", got, want)
	}
	msg := c.fails("export", "--entities-sql", "SELECT 1 AS customer_id", "--features", "customer_stats:orders_7d", "--out", filepath.Join(dir, "bad.csv"))
	mustContain(t, msg, "event_timestamp")
	msg = c.fails("export", "--entities-sql", "SELECT nope FROM nowhere", "--features", "customer_stats:orders_7d", "--out", filepath.Join(dir, "bad.csv"))
	mustContain(t, msg, "entity query")
	assertNoFile(t, filepath.Join(dir, "bad.csv"))
}

func TestExportRejectsBadRequests(t *testing.T) {
	c, dir := tourSetup(t)
	ents := filepath.Join(dir, "data/entities.csv")
	noKey := writeFiles(t, map[string]string{"e.csv": "customer_id,event_timestamp\nc1,2024-01-01 00:00:00\n"})
	badTS := writeFiles(t, map[string]string{"e.csv": "customer_id,event_timestamp\nc1,2024-01-01 00:00:00\nc2,yesterday\n"})
	clash := writeFiles(t, map[string]string{"e.csv": "customer_id,event_timestamp,segment\nc1,2024-01-01 00:00:00,x\n"})
	out := filepath.Join(dir, "never.csv")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown view", []string{"--entities", ents, "--features", "nope:orders_7d"}, []string{`"nope:orders_7d"`, `"nope"`}},
		{"unknown feature", []string{"--entities", ents, "--features", "customer_stats:nope"}, []string{`"customer_stats:nope"`}},
		{"malformed reference", []string{"--entities", ents, "--features", "customer_stats"}, []string{`"customer_stats"`}},
		{"unknown service", []string{"--entities", ents, "--service", "nope"}, []string{`"nope"`}},
		{"missing join key column", []string{"--entities", filepath.Join(noKey, "e.csv"), "--features", "product_stats:popularity"}, []string{`"product_id"`}},
		{"bad entity timestamp", []string{"--entities", filepath.Join(badTS, "e.csv"), "--features", "customer_stats:orders_7d"}, []string{"row 2", `"event_timestamp"`, `"yesterday"`}},
		{"missing timestamp column", []string{"--entities", ents, "--features", "customer_stats:orders_7d", "--timestamp-column", "ts"}, []string{`"ts"`}},
		{"name collision", []string{"--entities", filepath.Join(clash, "e.csv"), "--features", "customer_stats:segment"}, []string{`"segment"`, "entity column", "customer_stats:segment", "--full-names"}},
		{"both feature flags", []string{"--entities", ents, "--service", "svc", "--features", "customer_stats:spend"}, []string{"--features", "--service"}},
		{"no entities", []string{"--features", "customer_stats:spend"}, []string{"--entities"}},
		{"unknown output format", []string{"--entities", ents, "--features", "customer_stats:spend", "--format", "xlsx"}, []string{"xlsx"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := c.fails(append(append([]string{"export"}, tc.args...), "--out", out)...)
			mustContain(t, msg, tc.want...)
			assertNoFile(t, out)
		})
	}
	// Two views with a feature of the same name collide unless --full-names.
	c2 := newCLI(t)
	d := writeFiles(t, map[string]string{"r/a.yaml": `entities: [{name: customer, join_key: customer_id, type: string}]
feature_views:
  - {name: a, entities: [customer], features: [{name: score, type: float64}]}
  - {name: b, entities: [customer], features: [{name: score, type: float64}]}
`})
	c2.ok("apply", filepath.Join(d, "r"))
	msg := c2.fails("export", "--entities", filepath.Join(noKey, "e.csv"), "--features", "a:score,b:score", "--out", out)
	mustContain(t, msg, `"score"`, "a:score", "b:score", "--full-names")
	c2.ok("export", "--entities", filepath.Join(noKey, "e.csv"), "--features", "a:score,b:score", "--full-names", "--out", out)
	if first := strings.SplitN(readFile(t, out), "\n", 2)[0]; first != "customer_id,event_timestamp,a__score,b__score" {
		t.Fatalf("header = %q", first)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func assertNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists after a failed command", path)
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"*"))
	if len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// toCSV reads a Parquet or Arrow file with tablefile and renders it with the
// CSV writer, so typed exports compare against the CSV text.
func toCSV(t *testing.T, path string) (*arrow.Schema, string) {
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
	var buf bytes.Buffer
	w, err := tablefile.NewWriter(&buf, tablefile.CSV, r.Schema(), tablefile.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return r.Schema(), buf.String()
}

// TestLabelsCarriedThrough: entity columns other than keys and the
// timestamp come out exactly as they went in, typed where the text allows.
func TestLabelsCarriedThrough(t *testing.T) {
	c, dir := tourSetup(t)
	in := "customer_id,event_timestamp,id,n,score,ratio,flag,note\n" +
		"c1,2024-01-02 12:00:00,007,1,0.5,1.0,true,\"a, b\"\n" +
		"c2,2024-01-02 12:00:00,12,,1.25,2.5,false,\n" +
		"c9,2024-01-02 12:00:00,,-3,,,,x\n"
	ents := filepath.Join(writeFiles(t, map[string]string{"e.csv": in}), "e.csv")
	out := filepath.Join(dir, "labels.csv")
	c.ok("export", "--entities", ents, "--features", "customer_stats:orders_7d", "--out", out)
	want := "customer_id,event_timestamp,id,n,score,ratio,flag,note,orders_7d\n" +
		"c1,2024-01-02T12:00:00Z,007,1,0.5,1.0,true,\"a, b\",3\n" +
		"c2,2024-01-02T12:00:00Z,12,,1.25,2.5,false,,7\n" +
		"c9,2024-01-02T12:00:00Z,,-3,,,,x,\n"
	if got := readFile(t, out); got != want {
		t.Fatalf("labels:\n%s\nwant:\n%s", got, want)
	}
	pq := filepath.Join(dir, "labels.parquet")
	c.ok("export", "--entities", ents, "--features", "customer_stats:orders_7d", "--out", pq)
	schema, text := toCSV(t, pq)
	if text != want {
		t.Fatalf("labels via Parquet:\n%s\nwant:\n%s", text, want)
	}
	wantTypes := map[string]arrow.Type{"id": arrow.STRING, "n": arrow.INT64, "score": arrow.FLOAT64, "ratio": arrow.STRING, "flag": arrow.BOOL, "note": arrow.STRING}
	for name, typ := range wantTypes {
		idx := schema.FieldIndices(name)
		if len(idx) != 1 || schema.Field(idx[0]).Type.ID() != typ {
			t.Errorf("column %s: %v, want %s", name, schema.Field(idx[0]).Type, typ)
		}
	}
}
