package predlog_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/predlog"
)

// readBack returns the logged records of db ordered by request id, and
// the insertion times ClickHouse gave them.
func readBack(t *testing.T, conn driver.Conn, db string) ([]predlog.Record, []time.Time) {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT request_id, at, at_us, method,
		model_names, model_versions, model_aliases, entity, inputs_digest, outputs,
		latency_ns, fallback, error, _inserted_at
		FROM `+db+`.prediction_log ORDER BY request_id`)
	if err != nil {
		t.Fatalf("read prediction log: %v", err)
	}
	defer rows.Close()
	var out []predlog.Record
	var inserted []time.Time
	for rows.Next() {
		var (
			r              predlog.Record
			at, ins        time.Time
			us             uint32
			names, aliases []string
			versions       []int64
			latency        int64
			fallback       uint8
		)
		if err := rows.Scan(&r.RequestID, &at, &us, &r.Method, &names, &versions, &aliases, &r.Entity,
			&r.InputsDigest, &r.Outputs, &latency, &fallback, &r.Error, &ins); err != nil {
			t.Fatalf("scan: %v", err)
		}
		r.At = time.Unix(at.Unix(), int64(us)*1000).UTC()
		for i := range names {
			r.Models = append(r.Models, predlog.ModelVersion{Name: names[i], Version: versions[i], Alias: aliases[i]})
		}
		r.Latency, r.Fallback = time.Duration(latency), fallback == 1
		out = append(out, r)
		inserted = append(inserted, ins)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read prediction log: %v", err)
	}
	return out, inserted
}

// count returns the number of rows in db's prediction log.
func count(t *testing.T, conn driver.Conn, db string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".prediction_log").Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func closeLog(t *testing.T, l *predlog.Log, within time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return l.Close(ctx)
}

func TestRecordsReadBackExactly(t *testing.T) {
	conn, db := openDB(t, dsn)
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{FlushEvery: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	inputs := []assemble.Tensor{{Name: "x", Shape: []int64{1, 3}, Float32: []float32{0.5, -1, 3}}}
	kolkata := time.FixedZone("IST", 5*3600+1800)
	in := []predlog.Record{
		{
			RequestID: "r1", At: time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC), Method: predlog.MethodPredict,
			Models: []predlog.ModelVersion{{Name: "churn", Version: 7, Alias: "champion"}, {Name: "ltv", Version: 12}},
			Entity: "customer_id=c1", InputsDigest: predlog.Digest(inputs),
			Outputs: `{"probabilities":[0.25,0.75],"labels":["no","yes"],"note":"ü \"q\"\n"}`,
			Latency: 1234567 * time.Nanosecond,
		},
		{
			RequestID: "r2", At: time.Date(2026, 12, 31, 23, 59, 59, 999999000, kolkata), Method: predlog.MethodNextBestAction,
			Models: []predlog.ModelVersion{{Name: "next_product", Version: 3, Alias: "champion"}, {Name: "timing", Version: 1, Alias: "challenger"}, {Name: "channel", Version: 2, Alias: "champion"}},
			Entity: "customer_id=unknown", Outputs: `{"products":[{"id":"p9","score":0.1}]}`, Latency: 2 * time.Millisecond, Fallback: true,
		},
		{RequestID: "r3", Method: predlog.MethodPredict, Error: "model churn@champion: not found", Latency: 17 * time.Microsecond},
		{RequestID: "r4", At: time.Unix(1, 1000).UTC(), Method: predlog.MethodPredict, Models: []predlog.ModelVersion{{Name: "m", Version: 1 << 40}}},
	}
	before := time.Now()
	for _, r := range in {
		if !l.Record(r) {
			t.Fatalf("Record(%s) refused", r.RequestID)
		}
	}
	after := time.Now()
	if err := closeLog(t, l, time.Minute); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st := l.Stats(); st.Written != 4 || st.Batches != 1 || st.Dropped != 0 || st.Failed != 0 {
		t.Fatalf("stats = %+v, want 4 written in 1 batch", st)
	}
	got, inserted := readBack(t, conn, db)
	if len(got) != len(in) {
		t.Fatalf("read %d records, want %d", len(got), len(in))
	}
	// r3 had no time: Record stamped it.
	if at := got[2].At; at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
		t.Errorf("r3 stamped %v, want within [%v, %v]", at, before, after)
	}
	in[2].At = got[2].At
	for i, want := range in {
		want.At = want.At.UTC().Truncate(time.Microsecond)
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("record %d:\n got  %+v\n want %+v", i, got[i], want)
		}
		if d := time.Since(inserted[i]); inserted[i].IsZero() || d < -time.Minute || d > time.Minute {
			t.Errorf("record %d: _inserted_at = %v, want about now", i, inserted[i])
		}
	}
}

func TestBatchesBySizeAndFlushInterval(t *testing.T) {
	conn, db := openDB(t, dsn)
	t.Run("size", func(t *testing.T) {
		l, err := predlog.New(context.Background(), conn, db, predlog.Options{BatchRows: 10, FlushEvery: time.Hour, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 25 {
			l.Record(predlog.Record{RequestID: fmt.Sprintf("s%02d", i), Method: predlog.MethodPredict})
		}
		// Full batches go out without waiting for the interval.
		waitFor(t, func() bool { return l.Stats().Written >= 10 })
		if err := closeLog(t, l, time.Minute); err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.Written != 25 || st.Batches != 3 {
			t.Fatalf("stats = %+v, want 25 written in 3 batches", st)
		}
	})
	t.Run("interval", func(t *testing.T) {
		l, err := predlog.New(context.Background(), conn, db, predlog.Options{FlushEvery: 20 * time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer closeLog(t, l, time.Minute)
		for i := range 3 {
			l.Record(predlog.Record{RequestID: fmt.Sprintf("i%d", i), Method: predlog.MethodPredict})
		}
		waitFor(t, func() bool { return l.Stats().Written == 3 })
	})
	t.Run("queue smaller than a batch", func(t *testing.T) {
		// The writer is woken at half the queue, so records keep flowing
		// long before FlushEvery, and still go out in full batches.
		l, err := predlog.New(context.Background(), conn, db, predlog.Options{Queue: 8, BatchRows: 100, FlushEvery: time.Hour, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for i := range 250 {
			for !l.Record(predlog.Record{RequestID: fmt.Sprintf("q%03d", i), Method: predlog.MethodPredict}) {
				if time.Now().After(deadline) {
					t.Fatalf("record %d: the queue was not drained in 30s", i)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if err := closeLog(t, l, time.Minute); err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.Written != 250 || st.Batches != 3 {
			t.Fatalf("stats = %+v, want 250 written in 3 batches", st)
		}
	})
	if n := count(t, conn, db); n != 278 {
		t.Fatalf("table holds %d rows, want 278", n)
	}
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recordLoop calls Record n times as fast as it can and returns how many
// were accepted and how long the calls took.
func recordLoop(l *predlog.Log, prefix string, n int) (accepted int, took time.Duration) {
	began := time.Now()
	for i := range n {
		if l.Record(predlog.Record{RequestID: fmt.Sprintf("%s%07d", prefix, i), Method: predlog.MethodPredict, Latency: time.Millisecond}) {
			accepted++
		}
	}
	return accepted, time.Since(began)
}

// floorLoop is recordLoop with Record replaced by a non-blocking send on
// a full channel: what a loop that never blocks costs at least.
func floorLoop(prefix string, n int) time.Duration {
	full := make(chan predlog.Record, 1)
	full <- predlog.Record{}
	began := time.Now()
	for i := range n {
		select {
		case full <- predlog.Record{RequestID: fmt.Sprintf("%s%07d", prefix, i), Method: predlog.MethodPredict, Latency: time.Millisecond}:
		default:
		}
	}
	return time.Since(began)
}

// neverBlocked checks a Record loop against the floor measured in the
// same run. A blocked call would wait for the write timeout (minutes), so
// the bound is loose enough for a busy machine and the race detector.
func neverBlocked(t *testing.T, what string, calls int, took, floor time.Duration) {
	t.Helper()
	ratio := float64(took) / float64(floor)
	t.Logf("%d Record calls against %s: %v, %.2fx the floor loop (%v)", calls, what, took.Round(time.Millisecond), ratio, floor.Round(time.Millisecond))
	if ratio > 20 {
		t.Errorf("%d Record calls against %s took %v, %.1fx the floor loop's %v", calls, what, took, ratio, floor)
	}
}

// TestRecordNeverBlocksOnHungClickHouse freezes ClickHouse (SIGSTOP): the
// writer's INSERT hangs, the queue fills, Record keeps returning at once
// and counts drops; once ClickHouse is back, Close writes every accepted
// record.
func TestRecordNeverBlocksOnHungClickHouse(t *testing.T) {
	srv := startServer(t)
	conn, db := openDB(t, srv.DSN())
	const queue, batch, calls = 100, 10, 200_000
	logs := &logBuffer{}
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{
		Queue: queue, BatchRows: batch, FlushEvery: 5 * time.Millisecond, WriteTimeout: 5 * time.Minute, Logger: logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	resume := freeze(t, srv)
	// One record reaches the writer, which is then stuck in its INSERT.
	l.Record(predlog.Record{RequestID: "first", Method: predlog.MethodPredict})
	waitFor(t, func() bool { return l.Stats().Queued == 0 })
	time.Sleep(50 * time.Millisecond) // past FlushEvery: the INSERT has begun

	accepted, took := recordLoop(l, "r", calls)
	floor := floorLoop("r", calls)
	// The writer holds at most one batch; everything else waits in the
	// queue. A blocked call would take minutes (the write timeout).
	// (It may have taken a few more records into its batch before its
	// INSERT began.)
	if accepted < queue || accepted >= queue+batch {
		t.Errorf("accepted %d of %d records while ClickHouse hung, want the queue's %d (+ < %d in the writer's batch)", accepted, calls, queue, batch)
	}
	neverBlocked(t, "a hung ClickHouse", calls, took, floor)
	st := l.Stats()
	waitFor(t, func() bool { return logs.has("records dropped") })
	if st.Dropped != uint64(calls-accepted) || st.Queued != queue || st.Written != 0 {
		t.Errorf("stats = %+v, want %d dropped, %d queued, 0 written", st, calls-accepted, queue)
	}
	if d := metric(t, reg, "tailor_prediction_log_records_total", "result=dropped"); d != float64(calls-accepted) {
		t.Errorf("dropped metric = %v, want %d", d, calls-accepted)
	}
	if q := metric(t, reg, "tailor_prediction_log_queue_depth", ""); q != queue {
		t.Errorf("queue depth metric = %v, want %d", q, queue)
	}

	resume()
	if err := closeLog(t, l, 2*time.Minute); err != nil {
		t.Fatalf("Close after ClickHouse came back: %v", err)
	}
	st = l.Stats()
	want := uint64(accepted + 1)
	if st.Written != want || st.Failed != 0 {
		t.Errorf("stats after Close = %+v, want %d written, 0 failed", st, want)
	}
	if n := count(t, conn, db); n != want {
		t.Errorf("table holds %d rows, want %d", n, want)
	}
	if w := metric(t, reg, "tailor_prediction_log_records_total", "result=written"); w != float64(want) {
		t.Errorf("written metric = %v, want %d", w, want)
	}
}

// TestDeadClickHouse kills ClickHouse: writes fail, are retried, then
// counted as failed; Record still returns at once and Close reports the
// loss.
func TestDeadClickHouse(t *testing.T) {
	srv := startServer(t)
	conn, db := openDB(t, srv.DSN())
	logs := &logBuffer{}
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{
		Queue: 1000, BatchRows: 100, FlushEvery: 5 * time.Millisecond, Retries: 2, Backoff: 10 * time.Millisecond, Logger: logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	const calls = 100_000
	accepted, took := recordLoop(l, "d", calls)
	neverBlocked(t, "a dead ClickHouse", calls, took, floorLoop("d", calls))
	t.Logf("%d of %d accepted", accepted, calls)
	if accepted == 0 || accepted == calls {
		t.Errorf("accepted %d of %d: want the queue to fill and drop", accepted, calls)
	}
	err = closeLog(t, l, time.Minute)
	if err == nil {
		t.Fatal("Close returned nil after every write failed")
	}
	st := l.Stats()
	if st.Written != 0 || st.Failed != uint64(accepted) || st.Dropped != uint64(calls-accepted) {
		t.Errorf("stats = %+v, want 0 written, %d failed, %d dropped", st, accepted, calls-accepted)
	}
	if !logs.has("records lost") {
		t.Error("no failed write was logged")
	}
	if f := metric(t, reg, "tailor_prediction_log_records_total", "result=failed"); f != float64(accepted) {
		t.Errorf("failed metric = %v, want %d", f, accepted)
	}
	if w := metric(t, reg, "tailor_prediction_log_write_seconds", ""); w != 0 {
		t.Errorf("%v successful writes observed, want 0", w)
	}
}

// TestCloseIsBoundedByContext closes while ClickHouse hangs: Close gives
// up at its context's end and counts what it could not write as failed.
func TestCloseIsBoundedByContext(t *testing.T) {
	srv := startServer(t)
	conn, db := openDB(t, srv.DSN())
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{
		Queue: 100, BatchRows: 10, FlushEvery: 5 * time.Millisecond, WriteTimeout: 5 * time.Minute, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	resume := freeze(t, srv)
	defer resume()
	accepted, _ := recordLoop(l, "c", 50)
	began := time.Now()
	err = closeLog(t, l, 300*time.Millisecond)
	took := time.Since(began)
	t.Logf("Close with a 300ms context on a hung ClickHouse: %v, %d records failed", took.Round(time.Millisecond), accepted)
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want a context error", err)
	}
	if took > 10*time.Second {
		t.Errorf("Close took %v with a 300ms context", took)
	}
	if st := l.Stats(); st.Failed != uint64(accepted) || st.Written != 0 {
		t.Errorf("stats = %+v, want %d failed", st, accepted)
	}
	if l.Record(predlog.Record{RequestID: "late"}) {
		t.Error("Record accepted a record after Close")
	}
	if st := l.Stats(); st.Dropped != 1 {
		t.Errorf("a record after Close: dropped = %d, want 1", st.Dropped)
	}
}

func TestConcurrentRecord(t *testing.T) {
	conn, db := openDB(t, dsn)
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{BatchRows: 1000, FlushEvery: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 32, 2000
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for g := range goroutines {
		wg.Go(func() {
			n := 0
			models := []predlog.ModelVersion{{Name: "m", Version: int64(g)}}
			for i := range each {
				if l.Record(predlog.Record{RequestID: fmt.Sprintf("g%02d-%05d", g, i), Method: predlog.MethodPredict, Models: models}) {
					n++
				}
			}
			mu.Lock()
			accepted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := closeLog(t, l, time.Minute); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if accepted != goroutines*each || st.Written != uint64(accepted) || st.Dropped != 0 {
		t.Errorf("accepted %d, stats %+v: want all %d written", accepted, st, goroutines*each)
	}
	var rows, ids uint64
	if err := conn.QueryRow(context.Background(), "SELECT count(), uniqExact(request_id) FROM "+db+".prediction_log").Scan(&rows, &ids); err != nil {
		t.Fatal(err)
	}
	if rows != goroutines*each || ids != rows {
		t.Errorf("table holds %d rows with %d request ids, want %d distinct", rows, ids, goroutines*each)
	}
}

// TestCloseRacesRecord closes while goroutines record: every record is
// either accepted and written, or refused and counted as dropped.
func TestCloseRacesRecord(t *testing.T) {
	conn, db := openDB(t, dsn)
	l, err := predlog.New(context.Background(), conn, db, predlog.Options{Queue: 1 << 16, FlushEvery: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 5000
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range each {
				l.Record(predlog.Record{RequestID: fmt.Sprintf("g%d-%d", g, i)})
			}
		})
	}
	close(start)
	time.Sleep(time.Millisecond)
	if err := closeLog(t, l, time.Minute); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st := l.Stats()
	if st.Written+st.Dropped != goroutines*each || st.Failed != 0 {
		t.Errorf("stats = %+v: written+dropped want %d", st, goroutines*each)
	}
	if n := count(t, conn, db); n != st.Written {
		t.Errorf("table holds %d rows, %d counted written", n, st.Written)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	l, err := predlog.NewDiscard(predlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := l.Register(reg); err == nil {
		t.Fatal("registering the same metrics twice succeeded")
	}
	if c := metric(t, reg, "tailor_prediction_log_queue_capacity", ""); c != predlog.DefaultQueue {
		t.Errorf("queue capacity = %v, want %d", c, predlog.DefaultQueue)
	}
}

func TestNewRefusesBadArguments(t *testing.T) {
	conn, db := openDB(t, dsn)
	ctx := context.Background()
	if _, err := predlog.New(ctx, conn, "", predlog.Options{}); err == nil {
		t.Error("New with no database succeeded")
	}
	if _, err := predlog.New(ctx, conn, db, predlog.Options{Queue: -1}); err == nil {
		t.Error("New with a negative queue succeeded")
	}
	if _, err := predlog.New(ctx, conn, "no_such_db_"+db, predlog.Options{}); err == nil {
		t.Error("New in a missing database succeeded")
	}
}
