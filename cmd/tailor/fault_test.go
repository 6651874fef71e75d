package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// tailorProcess runs `tailor args...` for c as a process of its own, so
// that a test can kill it with SIGKILL as the OOM killer would.
func tailorProcess(t *testing.T, c *cli, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"--clickhouse", c.server(), "--database", c.db}, args...)...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, &out
}

// sigkill kills a process started by tailorProcess and reaps it.
func sigkill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// waitForTable waits until a table whose name starts with prefix exists
// in c's database (the process under test got that far).
func waitForTable(t *testing.T, c *cli, prefix string, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for strings.TrimSpace(c.sql(fmt.Sprintf("SELECT count() FROM system.tables WHERE database = '%s' AND startsWith(name, '%s')", c.db, prefix))) == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("no %s* table after 60 s; the process said:\n%s", prefix, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pushThenExport pushes a new row at once after a kill and exports it
// until the export holds it: it must within 5 s of the kill, since the
// dead process's lease stops counting as soon as ClickHouse sees its
// connection close. It returns how long that took.
func pushThenExport(t *testing.T, c *cli, base string, killed time.Time, view, feature string, value *featurestorev1.Value) time.Duration {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	key := fmt.Sprintf("after-kill-%d", now.UnixNano())
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	if _, err := client.Push(context.Background(), connect.NewRequest(&featurestorev1.PushRequest{FeatureView: view, Rows: []*featurestorev1.PushRow{{
		Values:         map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: key}}, feature: value},
		EventTimestamp: timestamppb.New(now.Add(-time.Second)),
	}}})); err != nil {
		t.Fatalf("push after the kill: %v", err)
	}
	dir := t.TempDir()
	entities := filepath.Join(dir, "e.csv")
	writeFile(t, entities, fmt.Sprintf("customer_id,event_timestamp\n%s,%s\n", key, now.Add(time.Hour).Format(time.RFC3339)))
	for n := 0; ; n++ {
		out := filepath.Join(dir, fmt.Sprintf("x%d.csv", n))
		c.ok("export", "--entities", entities, "--features", view+":"+feature, "--out", out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), ",777") {
			took := time.Since(killed)
			if took > 5*time.Second {
				t.Fatalf("the push was in an export only %s after the kill (want within 5 s)", took)
			}
			return took
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("5 s after the kill, exports still miss the row pushed after it:\n%s", b)
		}
	}
}

// noTables fails unless the tables whose names start with prefix are gone
// within 5 s of the kill (any tailor command sweeps when it starts, and
// a server every --sweep).
func noTables(t *testing.T, c *cli, prefix string, killed time.Time) time.Duration {
	t.Helper()
	for {
		n := strings.TrimSpace(c.sql(fmt.Sprintf("SELECT count() FROM system.tables WHERE database = '%s' AND startsWith(name, '%s')", c.db, prefix)))
		if n == "0" {
			return time.Since(killed)
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("%s tables of a killed process still there 5 s after: %s", prefix, n)
		}
		c.ok("views", "list") // a command: it sweeps as it opens the store
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKilledIngestStopsMattering: `tailor ingest` killed with SIGKILL
// while it stages a file (the file is a pipe the test holds open) leaves
// nothing that matters: a row pushed at once after the kill is in an
// export within 5 s (the dead ingestion no longer holds snapshot
// watermarks back), its staging table is dropped within seconds, and
// nothing of the half-read file is visible.
func TestKilledIngestStopsMattering(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": tourDefs}))
	base, _ := startServe(t, c, "--warm-start=false")
	fifo := filepath.Join(t.TempDir(), "stats.csv")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := tailorProcess(t, c, "ingest", "customer_stats", fifo, "--batch-rows", "10")
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var rows strings.Builder
	rows.WriteString("customer_id,event_ts,orders_7d,spend,segment\n")
	for i := range 100 {
		fmt.Fprintf(&rows, "half-%d,2025-01-01 00:00:00,%d,1.5,gold\n", i, i)
	}
	if _, err := io.WriteString(w, rows.String()); err != nil {
		t.Fatal(err)
	}
	waitForTable(t, c, "_stage_customer_stats_", out)
	time.Sleep(300 * time.Millisecond) // let it stage the rows it has
	killed := time.Now()
	sigkill(t, cmd)
	took := pushThenExport(t, c, base, killed, "customer_stats", "orders_7d", &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: 777}})
	swept := noTables(t, c, "_stage_", killed)
	t.Logf("after the kill: the pushed row was exported after %s, the staging table dropped after %s", took.Round(10*time.Millisecond), swept.Round(10*time.Millisecond))
	if n := strings.TrimSpace(c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats WHERE startsWith(customer_id, 'half-')")); n != "0" {
		t.Fatalf("%s rows of the killed ingestion are visible", n)
	}
}

// TestKilledScoreTableStopsMattering: `tailor score --table` killed with
// SIGKILL while it writes its staging table leaves the target as it was,
// and its staging table is dropped within seconds; a push and an export
// right after work as if it never ran.
func TestKilledScoreTableStopsMattering(t *testing.T) {
	c, _ := scoreSetup(t)
	c.exec("CREATE TABLE " + c.db + ".scores (customer_id String, was UInt8) ENGINE = Memory")
	c.exec("INSERT INTO " + c.db + ".scores SELECT 'c1', 1")
	base, _ := startServe(t, c, "--warm-start=false")
	cmd, out := tailorProcess(t, c, "score", "--model", "next_product", "--at", "2025-01-02",
		"--entities-sql", "SELECT concat('c', toString(number)) AS customer_id FROM system.numbers LIMIT 3000000", "--table", "scores")
	waitForTable(t, c, "_stage_scores_", out)
	killed := time.Now()
	sigkill(t, cmd)
	took := pushThenExport(t, c, base, killed, "cust", "f0", &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: 777}})
	swept := noTables(t, c, "_stage_scores_", killed)
	t.Logf("after the kill: the pushed row was exported after %s, the staging table dropped after %s", took.Round(10*time.Millisecond), swept.Round(10*time.Millisecond))
	if got := c.sql("SELECT customer_id, was FROM " + c.db + ".scores"); got != "c1\t1\n" {
		t.Fatalf("the target table changed: %q", got)
	}
}

// TestServerFindsRestartedClickHouse: `tailor clickhouse stop` then
// `start` under a running `tailor serve` on the local ClickHouse: while it
// is down the server answers Unavailable, and within 2 s of the start it
// answers again, reads and pushes alike, with nothing restarted but
// ClickHouse.
func TestServerFindsRestartedClickHouse(t *testing.T) {
	home := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		root := newRoot(&out, &errOut)
		root.SetArgs(append([]string{"--home", home, "--database", "restart"}, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("tailor %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	run("clickhouse", "start")
	t.Cleanup(func() { run("clickhouse", "stop") })
	run("apply", writeFiles(t, map[string]string{"defs.yaml": tourDefs}))

	pr, pw := io.Pipe()
	root := newRoot(pw, io.Discard)
	root.SetArgs([]string{"--home", home, "--database", "restart", "serve", "--addr", "127.0.0.1:0", "--warm-start=false"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()
	t.Cleanup(func() { cancel(); <-done })
	var line string
	if _, err := fmt.Fscanln(pr, new(string), new(string), &line); err != nil {
		t.Fatalf("serve did not start: %v", err)
	}
	go io.Copy(io.Discard, pr)
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), "http://"+line)

	n := 0
	// ask pushes a new key and reads it back: a push, and a read-through
	// of a key no tier holds (the push left it to be read through).
	ask := func() error {
		n++
		key := fmt.Sprintf("k%d", n)
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := client.Push(rctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{{
			Values:         map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: key}}, "orders_7d": {Kind: &featurestorev1.Value_Int64Value{Int64Value: int64(n)}}},
			EventTimestamp: timestamppb.New(time.Now().Add(-time.Minute)),
		}}})); err != nil {
			return err
		}
		resp, err := client.GetOnlineFeatures(rctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"customer_stats:orders_7d"}}},
			Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: key + "-unknown"}}}}},
		}))
		if err != nil {
			return err
		}
		if st := resp.Msg.GetRows()[0].GetValues()[0].GetStatus(); st != featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND {
			return fmt.Errorf("an unknown key answered %s", st)
		}
		return nil
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		run("clickhouse", "stop")
		if err := ask(); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("round %d: with ClickHouse stopped: %v, want Unavailable", round, err)
		}
		run("clickhouse", "start")
		started := time.Now()
		var err error
		for err = ask(); err != nil; err = ask() {
			if time.Since(started) > 2*time.Second {
				t.Fatalf("round %d: still failing %s after ClickHouse started: %v", round, time.Since(started), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("round %d: answering again %s after ClickHouse started", round, time.Since(started).Round(time.Millisecond))
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("the server stopped")
	}
}
