package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// local runs tailor without --clickhouse, so it uses the managed server
// under home.
func local(t *testing.T, home string, args ...string) (string, error) {
	t.Helper()
	t.Setenv("TAILOR_CLICKHOUSE", "")
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(append([]string{"--home", home}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

func TestManagedLocalClickHouse(t *testing.T) {
	home := t.TempDir()
	t.Cleanup(func() { local(t, home, "clickhouse", "stop") })

	out, err := local(t, home, "clickhouse", "status")
	if err != nil || !strings.Contains(out, "not running") {
		t.Fatalf("status before start: %v\n%s", err, out)
	}
	// Any command starts the server on first use.
	dir := writeFiles(t, map[string]string{"defs.yaml": tourDefs})
	out, err = local(t, home, "apply", dir)
	if err != nil || !strings.Contains(out, "started local ClickHouse") || !strings.Contains(out, "Applied definitions version 1") {
		t.Fatalf("apply with a managed server: %v\n%s", err, out)
	}
	out, err = local(t, home, "clickhouse", "status")
	if err != nil || !strings.Contains(out, "running") || !strings.Contains(out, "18.") && !strings.Contains(out, "version") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	// The same server answers the next command: the definitions are there.
	out, err = local(t, home, "views", "list")
	if err != nil || !strings.Contains(out, "customer_stats") {
		t.Fatalf("views list: %v\n%s", err, out)
	}
	if out, err = local(t, home, "clickhouse", "stop"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	out, _ = local(t, home, "clickhouse", "status")
	if !strings.Contains(out, "not running") {
		t.Fatalf("status after stop:\n%s", out)
	}
	// Data survives a restart.
	out, err = local(t, home, "views", "list")
	if err != nil || !strings.Contains(out, "customer_stats") {
		t.Fatalf("views list after restart: %v\n%s", err, out)
	}
}

func TestMissingClickHouseBinarySaysMakeDeps(t *testing.T) {
	t.Setenv("TAILOR_CLICKHOUSE_SERVER", filepath.Join(t.TempDir(), "no-such-clickhouse"))
	_, err := local(t, t.TempDir(), "views", "list")
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("error = %v, want one telling to run make deps", err)
	}
}

// TestExternalSourceTable: a view over an existing ClickHouse table is
// checked column by column at apply, and exported like any other.
func TestExternalSourceTable(t *testing.T) {
	c := newCLI(t)
	c.exec("CREATE DATABASE IF NOT EXISTS " + c.db)
	c.exec("CREATE TABLE " + c.db + ".shop_stats (cust String, ts DateTime, score Float64, n Int32) ENGINE = MergeTree ORDER BY (cust, ts)")
	c.exec("INSERT INTO " + c.db + ".shop_stats SELECT 'a', toDateTime('2024-01-01 00:00:00'), 0.5, toInt32(1) UNION ALL SELECT 'a', toDateTime('2024-01-03 00:00:00'), 0.7, toInt32(2)")
	defs := func(features string) string {
		return `entities: [{name: cust, join_key: cust, type: string}]
feature_views:
  - name: shop
    entities: [cust]
    source: {table: ` + c.db + `.shop_stats, timestamp_field: ts}
    features:
` + features
	}
	bad := []struct{ name, features, want string }{
		{"missing column", "      - {name: score, type: float64}\n      - {name: nope, type: int64}\n", `"nope"`},
		{"wrong type", "      - {name: score, type: string}\n", "Float64"},
		{"narrower type", "      - {name: score, type: float32}\n", `"score"`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			d := writeFiles(t, map[string]string{"defs.yaml": defs(b.features)})
			mustContain(t, c.fails("apply", d), b.want, "defs.yaml:", "shop_stats")
		})
	}
	d := writeFiles(t, map[string]string{"defs.yaml": defs("      - {name: score, type: float64}\n      - {name: n, type: int64}\n"),
		"e.csv": "cust,event_timestamp\na,2024-01-02 00:00:00\na,2024-01-04 00:00:00\nb,2024-01-04 00:00:00\n"})
	c.ok("apply", d)
	out := filepath.Join(d, "out.csv")
	c.ok("export", "--entities", filepath.Join(d, "e.csv"), "--features", "shop:*", "--out", out)
	want := "cust,event_timestamp,score,n\na,2024-01-02T00:00:00Z,0.5,1\na,2024-01-04T00:00:00Z,0.7,2\nb,2024-01-04T00:00:00Z,,\n"
	if got := readFile(t, out); got != want {
		t.Fatalf("export from an external table:\n%s\nwant:\n%s", got, want)
	}
}
