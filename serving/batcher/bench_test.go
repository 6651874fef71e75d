package batcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	"github.com/tailorhq/tailor/serving/onnxrt"
)

// BenchmarkBatcher measures the throughput of single-row requests from 64
// goroutines through next_product.onnx (one intra-op thread), each round
// served three ways, interleaved so that they see the same machine:
//
//   - batched: a Batcher with MaxBatch 64, MaxDelay 500µs;
//   - unbatched: a Batcher with MaxBatch 1 (every request runs alone);
//   - direct: every goroutine calling Session.Run itself, at once.
//
// It reports rows/s of each, rows per batched run, and the ratios
// batched-vs-unbatched (issue 5's target: >= 3) and batched-vs-direct.
func BenchmarkBatcher(b *testing.B) {
	const concurrency, perGoroutine = 64, 32
	s := session(b, "next_product")
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := make([][]onnxrt.Tensor, concurrency)
	for i := range inputs {
		inputs[i] = oneRow(rng, "features", 12)
	}
	batched := New(s.Run, Options{MaxBatch: 64, MaxDelay: 500 * time.Microsecond})
	defer batched.Close()
	unbatched := New(s.Run, Options{MaxBatch: 1, MaxQueue: concurrency})
	defer unbatched.Close()

	round := func(run RunFunc) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for g := range concurrency {
			wg.Go(func() {
				for range perGoroutine {
					if _, err := run(context.Background(), inputs[g]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var tBatched, tUnbatched, tDirect time.Duration
	rounds := 0
	b.ReportAllocs()
	for b.Loop() {
		tUnbatched += round(unbatched.Run)
		tBatched += round(batched.Run)
		tDirect += round(s.Run)
		rounds++
	}
	rows := float64(rounds * concurrency * perGoroutine)
	b.ReportMetric(rows/tBatched.Seconds(), "batched-rows/s")
	b.ReportMetric(rows/tUnbatched.Seconds(), "unbatched-rows/s")
	b.ReportMetric(rows/tDirect.Seconds(), "direct-rows/s")
	b.ReportMetric(batched.Stats().AvgBatch, "rows/batch")
	b.ReportMetric(tUnbatched.Seconds()/tBatched.Seconds(), "batched-vs-unbatched")
	b.ReportMetric(tDirect.Seconds()/tBatched.Seconds(), "batched-vs-direct")
	ratio := tUnbatched.Seconds() / tBatched.Seconds()
	_ = benchrec.Record(benchrec.Result{Area: "models", Benchmark: "serving/batcher " + b.Name(),
		Measure: fmt.Sprintf("dynamic batching, %d goroutines of single-row requests through next_product.onnx", concurrency),
		Value:   fmt.Sprintf("%.0f rows/s (%.1f rows per batch)", rows/tBatched.Seconds(), batched.Stats().AvgBatch),
		Floor:   fmt.Sprintf("the same requests unbatched: %.0f rows/s", rows/tUnbatched.Seconds()),
		Ratio:   fmt.Sprintf("%.1fx", ratio), Target: ">= 3x", Met: benchrec.Met(ratio >= 3)})
}

// BenchmarkOverhead measures the batcher's own cost per single-row request
// from 64 goroutines, with a RunFunc that does next to nothing (it returns
// one float32 output of the batch's rows).
func BenchmarkOverhead(b *testing.B) {
	run := func(_ context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
		rows := in[0].Shape[0]
		return []onnxrt.Tensor{{Name: "y", Shape: []int64{rows, 8}, Float32: make([]float32, rows*8)}}, nil
	}
	for _, bc := range []struct {
		name string
		opt  Options
	}{
		{"unbatched", Options{MaxBatch: 1, MaxQueue: 1024}},
		{"batched", Options{MaxBatch: 64, MaxDelay: 500 * time.Microsecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bt := New(run, bc.opt)
			defer bt.Close()
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				in := oneRow(rand.New(rand.NewPCG(1, 2)), "x", 12)
				for pb.Next() {
					if _, err := bt.Run(context.Background(), in); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(bt.Stats().AvgBatch, "rows/batch")
		})
	}
}
