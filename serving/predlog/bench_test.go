package predlog_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/predlog"
)

// benchRecord is what a Predict logs: one model, a digest, a small answer.
func benchRecord() predlog.Record {
	return predlog.Record{
		RequestID: "0193a0c4-7c1e-7c3a-9f7e-3f1c2b4d5e6f", At: time.Now(), Method: predlog.MethodPredict,
		Models:       []predlog.ModelVersion{{Name: "next_product", Version: 3, Alias: "champion"}},
		Entity:       "customer_id=c1",
		InputsDigest: predlog.Digest(sampleInputs()),
		Outputs:      `{"products":[{"id":"p1","score":0.61},{"id":"p7","score":0.22}]}`,
		Latency:      850 * time.Microsecond,
	}
}

// BenchmarkRecord measures Record on the request path, on its two
// paths: a record accepted into the queue, and a record dropped because
// the queue is full. Each has a floor: the same non-blocking send of the
// record on a bare buffered channel. "accepted" runs in chunks of a
// quarter of the queue, below the length that wakes the writer, the queue
// drained with the timer stopped in between: no call takes the drop path
// and nothing competes for the queue.
func BenchmarkRecord(b *testing.B) {
	r := benchRecord()
	const queue = predlog.DefaultQueue
	const chunk = queue / 4
	// The accepted path's figure goes to RESULTS.md with its floor.
	var floorNs float64
	b.Run("accepted/floor", func(b *testing.B) {
		defer func() { floorNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N) }()
		ch := make(chan predlog.Record, queue)
		b.ReportAllocs()
		for i := range b.N {
			if i%chunk == 0 {
				b.StopTimer()
				for len(ch) > 0 {
					<-ch
				}
				b.StartTimer()
			}
			select {
			case ch <- r:
			default:
				b.Fatal("floor queue full")
			}
		}
	})
	b.Run("accepted/record", func(b *testing.B) {
		// The writer would wake at half the queue: it stays asleep.
		l, err := predlog.NewDiscard(predlog.Options{Queue: queue, BatchRows: queue, FlushEvery: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close(context.Background())
		b.ReportAllocs()
		for i := range b.N {
			if i%chunk == 0 {
				b.StopTimer()
				l.Drain()
				b.StartTimer()
			}
			if !l.Record(r) {
				b.Fatal("dropped")
			}
		}
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		if floorNs > 0 {
			_ = benchrec.Record(benchrec.Result{Area: "models", Benchmark: "serving/predlog BenchmarkRecord/accepted",
				Measure: "prediction log Record on the request path", Value: fmt.Sprintf("%.0f ns", ns),
				Floor: fmt.Sprintf("a bare buffered channel send: %.0f ns", floorNs), Ratio: fmt.Sprintf("%.2fx", ns/floorNs),
				Target: "never blocks", Met: benchrec.Met(true)})
		}
	})
	fullFloor := func() chan predlog.Record {
		ch := make(chan predlog.Record, queue)
		for len(ch) < cap(ch) {
			ch <- r
		}
		return ch
	}
	full := func(b *testing.B) *predlog.Log {
		l, err := predlog.NewStuck(predlog.Options{Queue: queue, BatchRows: 1, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		for l.Stats().Queued < queue {
			l.Record(r)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = l.Close(ctx)
		})
		return l
	}
	b.Run("dropped/floor", func(b *testing.B) {
		ch := fullFloor()
		b.ReportAllocs()
		for b.Loop() {
			select {
			case ch <- r:
				b.Fatal("floor queue not full")
			default:
			}
		}
	})
	b.Run("dropped/record", func(b *testing.B) {
		l := full(b)
		b.ReportAllocs()
		for b.Loop() {
			if l.Record(r) {
				b.Fatal("accepted into a full queue")
			}
		}
	})
	b.Run("dropped-parallel/floor", func(b *testing.B) {
		ch := fullFloor()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				select {
				case ch <- r:
					panic("floor queue not full")
				default:
				}
			}
		})
	})
	b.Run("dropped-parallel/record", func(b *testing.B) {
		l := full(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if l.Record(r) {
					panic("accepted into a full queue")
				}
			}
		})
	})
}

// BenchmarkWrite measures the writer's throughput into ClickHouse with
// the default batch size: b.N records queued, then Close writes them all.
// Above its rate (records/s) a sustained load drops. floor is the bare
// driver inserting the same rows from ready-made columns, in batches of
// the same size.
func BenchmarkWrite(b *testing.B) {
	r := benchRecord()
	b.Run("floor", func(b *testing.B) {
		conn, db := openDB(b, dsn)
		l, err := predlog.New(context.Background(), conn, db, predlog.Options{Logger: quiet}) // creates the table
		if err != nil {
			b.Fatal(err)
		}
		_ = l.Close(context.Background())
		const n = predlog.DefaultBatchRows
		m := r.Models[0]
		cols := []any{
			slicesOf(r.At.UTC().Truncate(time.Second), n), slicesOf(uint32(r.At.Nanosecond()/1000), n),
			slicesOf(r.RequestID, n), slicesOf(r.Method, n),
			slicesOf([]string{m.Name}, n), slicesOf([]int64{m.Version}, n), slicesOf([]string{m.Alias}, n),
			slicesOf(r.Entity, n), slicesOf(r.InputsDigest, n), slicesOf(r.Outputs, n),
			slicesOf(int64(r.Latency), n), slicesOf(uint8(0), n), slicesOf("", n),
		}
		insert := "INSERT INTO " + db + ".prediction_log (at, at_us, request_id, method, model_names, model_versions, model_aliases, entity, inputs_digest, outputs, latency_ns, fallback, error)"
		b.ResetTimer()
		written := 0
		for written < b.N { // whole batches: the last may write more than b.N
			batch, err := conn.PrepareBatch(context.Background(), insert)
			if err != nil {
				b.Fatal(err)
			}
			for i, c := range cols {
				if err := batch.Column(i).Append(c); err != nil {
					b.Fatal(err)
				}
			}
			if err := batch.Send(); err != nil {
				b.Fatal(err)
			}
			written += n
		}
		b.StopTimer()
		b.ReportMetric(float64(written)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("log", func(b *testing.B) {
		conn, db := openDB(b, dsn)
		l, err := predlog.New(context.Background(), conn, db, predlog.Options{Queue: b.N, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if !l.Record(r) {
				b.Fatal("dropped")
			}
		}
		if err := l.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

func slicesOf[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// BenchmarkDigest digests float32 inputs of batch rows x 32 features;
// floor is sha256 over the same number of raw bytes.
func BenchmarkDigest(b *testing.B) {
	for _, rows := range []int{1, 64, 1024} {
		ts := []assemble.Tensor{{Name: "features", Shape: []int64{int64(rows), 32}, Float32: make([]float32, rows*32)}}
		for i := range ts[0].Float32 {
			ts[0].Float32[i] = float32(i) * 0.37
		}
		raw := make([]byte, 4*rows*32)
		b.Run(fmt.Sprintf("rows=%d/floor", rows), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				sha256.Sum256(raw)
			}
		})
		b.Run(fmt.Sprintf("rows=%d/digest", rows), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				predlog.Digest(ts)
			}
		})
	}
}
