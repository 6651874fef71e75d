package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScoreTableFailsMidway interrupts `tailor score --table` after it has
// stored some scores in its staging table: the command fails, the target
// table keeps the previous run's scores, no staging table is left, and a
// rerun replaces the table.
func TestScoreTableFailsMidway(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": modelDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": predictSpec})
	base, _ := startServe(t, c, "--warm-start=false")
	c.ok("models", "--server", base, "register", testModel(t, "next_product.onnx"), "--spec", filepath.Join(dir, "model.yaml"))
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
