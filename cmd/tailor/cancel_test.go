package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	exportv1 "github.com/tailorhq/tailor/proto/gen/tailor/export/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
)

// Entity queries for the cancellation tests. The first is slow to load
// (sleepEachRow, about a minute in all); the second loads in a second or
// two and yields about a hundred megabytes of training rows.
const (
	slowEntities  = "SELECT concat('c', toString(number % 2 + 1)) AS customer_id, toDateTime('2024-01-02 12:00:00') AS event_timestamp FROM numbers(3000000) WHERE sleepEachRow(0.00002) = 0"
	largeEntities = "SELECT concat('c', toString(number % 2 + 1)) AS customer_id, toDateTime('2024-01-02 12:00:00') AS event_timestamp FROM numbers(3000000)"
)

// queriesRunning counts this test database's queries in ClickHouse that
// match like and have run for more than half a second.
func queriesRunning(c *cli, like string) int {
	got := strings.TrimSpace(c.sql(fmt.Sprintf("SELECT count() FROM system.processes WHERE query LIKE '%s' AND query LIKE '%%%s%%' AND query NOT LIKE '%%system.processes%%' AND elapsed > 0.5", like, c.db)))
	var n int
	fmt.Sscan(got, &n)
	return n
}

// waitFor polls cond every 50ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// checkStopped asserts that the export's query has left ClickHouse and its
// entity table has been dropped.
func checkStopped(t *testing.T, c *cli, like string) {
	t.Helper()
	if !waitFor(5*time.Second, func() bool { return queriesRunning(c, like) == 0 }) {
		t.Errorf("the ClickHouse query (%s) still runs 5s after the cancel:\n%s", like, c.sql("SELECT elapsed, query FROM system.processes"))
	}
	entityTables := func() string {
		return strings.TrimSpace(c.sql(fmt.Sprintf("SELECT name FROM system.tables WHERE database = '%s' AND name LIKE '\\_entities\\_%%'", c.db)))
	}
	if !waitFor(5*time.Second, func() bool { return entityTables() == "" }) {
		t.Errorf("entity tables left behind: %s", entityTables())
	}
}

// TestExportServiceCancelStopsTheQuery cancels ExportTrainingSet while the
// server loads the entity rows and while it streams training rows to a
// client that stopped reading: each time the ClickHouse query stops, the
// client sees Canceled, nothing is left behind, and the server goes on
// serving exports.
func TestExportServiceCancelStopsTheQuery(t *testing.T) {
	c, _ := tourSetup(t)
	base, _ := startServe(t, c, "--warm-start=false")
	// No client timeout: the server answers with the first rows, after
	// ClickHouse has joined and sorted three million of them.
	h2c := h2cClient()
	h2c.Timeout = 0
	client := exportv1connect.NewExportServiceClient(h2c, base)
	for _, tc := range []struct {
		name, sql, like string
		readFirst       bool
	}{
		{"while loading entity rows", slowEntities, "CREATE TABLE%sleepEachRow%", false},
		{"while streaming rows", largeEntities, "SELECT%\\_entities\\_%", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			firstMessage := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				stream, err := client.ExportTrainingSet(ctx, connect.NewRequest(&exportv1.ExportTrainingSetRequest{
					Features: []string{"customer_stats:orders_7d", "customer_stats:segment"},
					Entities: &exportv1.ExportTrainingSetRequest_Sql{Sql: tc.sql}}))
				if err != nil {
					done <- err
					return
				}
				defer stream.Close()
				if stream.Receive() {
					close(firstMessage)
					if tc.readFirst {
						<-ctx.Done() // a client that stops reading
					}
					for stream.Receive() {
					}
				}
				done <- stream.Err()
			}()
			if tc.readFirst {
				select {
				case <-firstMessage:
				case err := <-done:
					t.Fatalf("the export ended before the cancel: %v", err)
				case <-time.After(60 * time.Second):
					t.Fatal("no rows streamed within 60s")
				}
			}
			if !waitFor(60*time.Second, func() bool { return queriesRunning(c, tc.like) > 0 }) {
				t.Fatalf("the export's query (%s) never showed in system.processes:\n%s", tc.like, c.sql("SELECT elapsed, query FROM system.processes"))
			}
			cancel()
			select {
			case err := <-done:
				if connect.CodeOf(err) != connect.CodeCanceled {
					t.Errorf("the cancelled stream ended with %v, want Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the stream did not end within 10s of the cancel")
			}
			checkStopped(t, c, tc.like)
		})
	}
	// The server still exports.
	got, _ := streamCSV(t, base, &exportv1.ExportTrainingSetRequest{Features: []string{"customer_stats:orders_7d"},
		Entities: &exportv1.ExportTrainingSetRequest_Sql{Sql: "SELECT 'c1' AS customer_id, toDateTime('2024-01-02 12:00:00') AS event_timestamp"}})
	mustContain(t, got, "c1,2024-01-02T12:00:00Z,3")
}

// TestExportCancelStopsTheQuery interrupts `tailor export` (its context is
// what SIGINT cancels) while ClickHouse loads the entity rows: the command
// fails with the cancel, the query stops, and neither the output file nor
// its manifest nor a temporary file appears.
func TestExportCancelStopsTheQuery(t *testing.T) {
	c, dir := tourSetup(t)
	out := filepath.Join(dir, "out", "train.parquet")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := c.runContext(ctx, "export", "--entities-sql", slowEntities, "--features", "customer_stats:orders_7d", "--out", out)
		done <- err
	}()
	const like = "CREATE TABLE%sleepEachRow%"
	if !waitFor(60*time.Second, func() bool { return queriesRunning(c, like) > 0 }) {
		t.Fatalf("the export's query never showed in system.processes")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("tailor export ended with %v, want the cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tailor export did not stop within 10s of the cancel")
	}
	checkStopped(t, c, like)
	left, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range left {
		t.Errorf("left behind: %s", e.Name())
	}
}
