package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scoreSetup applies the model tests' definitions and registers
// next_product as version 1; it returns the CLI and a scratch directory.
func scoreSetup(t *testing.T) (*cli, string) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": modelDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": predictSpec})
	base, _ := startServe(t, c, "--warm-start=false")
	c.ok("models", "--server", base, "register", testModel(t, "next_product.onnx"), "--spec", filepath.Join(dir, "model.yaml"))
	return c, dir
}

// TestScoreRejectsBadEntities: entity sets a run cannot score fail before
// anything is written, with an error naming the problem.
func TestScoreRejectsBadEntities(t *testing.T) {
	c, dir := scoreSetup(t)
	files := map[string]string{
		"nokey.csv":   "client,x\nc1,1\n",
		"empty.csv":   "customer_id\n",
		"nullkey.csv": "customer_id,x\n,1\n",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	at := "2025-01-01"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"file without the join key", []string{"--entities", filepath.Join(dir, "nokey.csv")}, []string{"customer_id"}},
		{"file with an empty key", []string{"--entities", filepath.Join(dir, "nullkey.csv")}, []string{"customer_id", "row 1"}},
		{"file without rows", []string{"--entities", filepath.Join(dir, "empty.csv")}, []string{"no entity rows"}},
		{"missing file", []string{"--entities", filepath.Join(dir, "nope.csv")}, []string{"nope.csv"}},
		{"query without the join key", []string{"--entities-sql", "SELECT 1 AS client"}, []string{"customer_id"}},
		{"query that fails", []string{"--entities-sql", "SELEC customer_id"}, []string{"SELEC customer_id", "Syntax error"}},
		{"query with an integer key", []string{"--entities-sql", "SELECT 1 AS customer_id"}, []string{"customer_id", "UInt8"}},
		{"query without rows", []string{"--entities-sql", "SELECT 'c1' AS customer_id WHERE 0"}, []string{"no entity rows"}},
		{"both sources", []string{"--entities", filepath.Join(dir, "nokey.csv"), "--entities-sql", "SELECT 'c1' AS customer_id"}, []string{"not both"}},
		{"no source", nil, []string{"--entities"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "scores.csv")
			args := append([]string{"score", "--model", "next_product", "--at", at, "--out", out}, tc.args...)
			mustContain(t, c.fails(args...), tc.want...)
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a failed run left an output file")
			}
		})
	}
}

// TestScoreTableFailsMidway interrupts `tailor score --table` after it has
// stored some scores in its staging table: the command fails, the target
// table keeps the previous run's scores, no staging table is left, and a
// rerun replaces the table.
func TestScoreTableFailsMidway(t *testing.T) {
	c, _ := scoreSetup(t)
	at := time.Now().UTC().Format(time.RFC3339)
	small := "SELECT concat('c', toString(number)) AS customer_id FROM numbers(3)"
	mustContain(t, c.ok("score", "--model", "next_product", "--entities-sql", small, "--at", at, "--table", "scores"), "table scores: 3 entities")
	table := func() string {
		return c.sql("SELECT customer_id, model_version, snapshot_id, probabilities__p1 FROM " + c.db + ".scores ORDER BY customer_id")
	}
	before := table()
	staged := func() string {
		return strings.TrimSpace(c.sql("SELECT sum(rows) FROM system.parts WHERE active AND database = '" + c.db + "' AND table LIKE '\\_stage\\_scores\\_%'"))
	}
	stagingTables := func() string {
		return strings.TrimSpace(c.sql("SELECT name FROM system.tables WHERE database = '" + c.db + "' AND name LIKE '\\_stage\\_scores\\_%'"))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := c.runContext(ctx, "score", "--model", "next_product", "--entities-sql",
			"SELECT concat('c', toString(number)) AS customer_id FROM numbers(1000000)", "--at", at, "--table", "scores")
		done <- err
	}()
	var stagedRows string
	if !waitFor(120*time.Second, func() bool { stagedRows = staged(); return stagedRows != "" && stagedRows != "0" }) {
		t.Fatal("no scores reached a staging table")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the interrupted run ended with %v, want the cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tailor score did not stop within 10s of the cancel")
	}
	t.Logf("interrupted with %s rows staged", stagedRows)
	if after := table(); after != before {
		t.Fatalf("the interrupted run changed the table:\n%s\nwas\n%s", after, before)
	}
	if left := stagingTables(); left != "" {
		t.Fatalf("staging tables left behind: %s", left)
	}
	// A rerun is safe: it replaces the scores.
	mustContain(t, c.ok("score", "--model", "next_product", "--entities-sql", "SELECT concat('d', toString(number)) AS customer_id FROM numbers(5)", "--at", at, "--table", "scores"),
		"table scores: 5 entities")
	if got := strings.TrimSpace(c.sql("SELECT groupArray(customer_id) FROM (SELECT customer_id FROM " + c.db + ".scores ORDER BY customer_id)")); got != "[d0 d1 d2 d3 d4]" {
		t.Fatalf("after the rerun the table holds %s", got)
	}
	if left := stagingTables(); left != "" {
		t.Fatalf("staging tables left behind: %s", left)
	}
}
