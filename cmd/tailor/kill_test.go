package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// asMainEnv makes the test binary run the real main instead of the tests,
// so a test can run `tailor` as a process of its own (and kill it).
const asMainEnv = "TAILOR_TEST_RUN_MAIN"

func init() {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
}

// serveProcess is `tailor serve` running as a child process.
type serveProcess struct {
	cmd    *exec.Cmd
	base   string
	stderr *bytes.Buffer
	exited chan error
}

// startServeProcess runs `tailor serve` for c in a process of its own on a
// free loopback port, and waits until its health check says SERVING.
func startServeProcess(t *testing.T, c *cli) *serveProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "--clickhouse", c.server(), "--database", c.db, "serve", "--addr", "127.0.0.1:0", "--reload", "200ms")
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	p := &serveProcess{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	first := make(chan string, 1)
	go func() {
		// Read the address, drain the pipe, then reap the process.
		lines := bufio.NewReader(out)
		line, _ := lines.ReadString('\n')
		first <- line
		_, _ = lines.WriteTo(io.Discard)
		p.exited <- cmd.Wait()
		close(p.exited)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(30 * time.Second):
		t.Fatalf("tailor serve printed nothing in 30 s; stderr:\n%s", p.stderr)
	}
	if !strings.HasPrefix(line, "serving on ") {
		t.Fatalf("tailor serve said %q; stderr:\n%s", line, p.stderr)
	}
	p.base = "http://" + strings.TrimSpace(strings.TrimPrefix(line, "serving on "))
	health := grpchealth.NewClient(h2cClient(), p.base, connect.WithGRPC())
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := health.Check(context.Background(), &grpchealth.CheckRequest{Service: featurestorev1connect.FeatureServiceName})
		if err == nil && st.Status == grpchealth.StatusServing {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("tailor serve not SERVING within 30 s: %v %v; stderr:\n%s", st, err, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL, as the OOM killer or a lost machine would: no
// drain, no deferred cleanup.
func (p *serveProcess) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("tailor serve ended with %v, not by SIGKILL; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tailor serve still running 10 s after SIGKILL")
	}
}

// TestPushSurvivesKill: pushes run concurrently against a `tailor serve`
// process that is killed with SIGKILL mid-stream. Every push the server
// acknowledged is answered, exactly, by a fresh server on the same
// ClickHouse; a push that failed is either wholly there or wholly absent.
func TestPushSurvivesKill(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": tourDefs}))
	srv := startServeProcess(t, c)

	const (
		pushers     = 4
		rowsPerPush = 10
		killAfter   = 40 // acknowledged pushes before the kill
	)
	now := time.Now().UTC().Truncate(time.Second)
	type pushed struct {
		id    int
		rows  []*featurestorev1.PushRow
		acked bool
	}
	var (
		mu       sync.Mutex
		all      []*pushed
		acked    atomic.Int64
		inflight atomic.Int64
		killed   atomic.Bool
		across   atomic.Int64 // pushes sent before the kill and answered after it
		wg       sync.WaitGroup
	)
	for w := range pushers {
		opts := []connect.ClientOption{connect.WithGRPC()}
		if w%2 == 1 {
			opts = nil // the Connect protocol
		}
		client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), srv.base, opts...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Push until a push fails after the kill.
			for n := 0; ; n++ {
				p := &pushed{id: w*1_000_000 + n}
				for r := range rowsPerPush {
					id := p.id*100 + r
					p.rows = append(p.rows, &featurestorev1.PushRow{
						Values: map[string]*featurestorev1.Value{
							"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: fmt.Sprint("k", id)}},
							"orders_7d":   {Kind: &featurestorev1.Value_Int64Value{Int64Value: int64(id)<<20 | 1<<53}},
							"spend":       {Kind: &featurestorev1.Value_Float64Value{Float64Value: float64(id) / 8}},
						},
						// Distinct event times, all inside customer_stats' 48h ttl.
						EventTimestamp: timestamppb.New(now.Add(-time.Duration(r) * time.Second)),
					})
				}
				mu.Lock()
				all = append(all, p)
				mu.Unlock()
				wasKilled := killed.Load()
				inflight.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: p.rows}))
				cancel()
				inflight.Add(-1)
				if !wasKilled && killed.Load() {
					across.Add(1)
				}
				switch {
				case err == nil:
					mu.Lock()
					p.acked = true
					mu.Unlock()
					acked.Add(1)
				case killed.Load():
					return
				default:
					t.Errorf("push before the kill: %v", err)
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for acked.Load() < killAfter || inflight.Load() == 0 {
		if time.Now().After(deadline) {
			killed.Store(true)
			srv.kill(t)
			wg.Wait()
			t.Fatalf("only %d pushes acknowledged in 20 s; stderr:\n%s", acked.Load(), srv.stderr)
		}
		time.Sleep(time.Millisecond)
	}
	killed.Store(true)
	srv.kill(t)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	found := map[*pushed]int{} // rows of each push the fresh server answers
	var ackedRows, failed int
	for _, p := range all {
		if p.acked {
			ackedRows += len(p.rows)
		} else {
			failed++
		}
	}
	defer func() {
		stored := 0
		for p := range found {
			if !p.acked {
				stored++
			}
		}
		t.Logf("%d pushes (%d rows) acknowledged, %d failed (%d of those stored anyway); %d were sent before the kill and answered after it",
			acked.Load(), ackedRows, failed, stored, across.Load())
	}()
	if failed < pushers {
		t.Fatalf("%d pushes failed, want at least one per pusher", failed)
	}

	// A fresh server, with an empty tier, on the same ClickHouse.
	base, _ := startServe(t, c)
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	var entities []*featurestorev1.EntityRow
	var rows []*featurestorev1.PushRow
	var owner []*pushed
	for _, p := range all {
		for _, r := range p.rows {
			entities = append(entities, &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{"customer_id": r.GetValues()["customer_id"]}})
			rows = append(rows, r)
			owner = append(owner, p)
		}
	}
	bad := 0
	for start := 0; start < len(entities); start += 10_000 {
		end := min(start+10_000, len(entities))
		resp, err := client.GetOnlineFeatures(context.Background(), connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"customer_stats:orders_7d", "customer_stats:spend"}}},
			Entities: entities[start:end],
		}))
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range resp.Msg.GetRows() {
			r, p := rows[start+i], owner[start+i]
			key := r.GetValues()["customer_id"].GetStringValue()
			orders, spend := got.GetValues()[0], got.GetValues()[1]
			if orders.GetStatus() == featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND && !p.acked {
				continue // a failed push may be absent
			}
			found[p]++
			if orders.GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT ||
				orders.GetValue().GetInt64Value() != r.GetValues()["orders_7d"].GetInt64Value() ||
				spend.GetValue().GetFloat64Value() != r.GetValues()["spend"].GetFloat64Value() ||
				!orders.GetEventTimestamp().AsTime().Equal(r.GetEventTimestamp().AsTime()) {
				t.Errorf("%s (push acknowledged: %v): got %v, %v; pushed %v at %s", key, p.acked, orders, spend, r.GetValues(), r.GetEventTimestamp().AsTime())
				if bad++; bad == 10 {
					t.FailNow()
				}
			}
		}
	}
	// One push is one insert: a failed one is all there or not at all.
	for p, n := range found {
		if n != len(p.rows) {
			t.Errorf("push %d (acknowledged: %v): %d of its %d rows are stored", p.id, p.acked, n, len(p.rows))
		}
	}
}
