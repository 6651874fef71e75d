package batcher

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tailorhq/tailor/serving/onnxrt"
)

// fake is a RunFunc that computes its outputs row by row from its inputs
// (see double) and records the row count of every run. With gate set, a run
// waits for a value on it (or for its context to end).
type fake struct {
	gate chan struct{}
	// fail, when set, decides whether a run fails.
	fail func(in []onnxrt.Tensor) error
	// out, when set, replaces double.
	out func(in []onnxrt.Tensor) []onnxrt.Tensor

	mu        sync.Mutex
	runs      []int // rows of each run, in start order
	running   int
	cancelled int // runs whose context ended while they waited on gate
}

var errBoom = errors.New("boom")

func (f *fake) run(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	f.mu.Lock()
	f.runs = append(f.runs, int(in[0].Shape[0]))
	f.running++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			f.mu.Lock()
			f.cancelled++
			f.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	if f.fail != nil {
		if err := f.fail(in); err != nil {
			return nil, err
		}
	}
	if f.out != nil {
		return f.out(in), nil
	}
	return double(in), nil
}

func (f *fake) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := slices.Clone(f.runs)
	slices.Sort(s)
	return s
}

func (f *fake) stat() (running, cancelled int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running, f.cancelled
}

// double is a row-wise model: for each input an output named after it with
// "2" appended, every element doubled (strings repeated, bools negated), and
// an output "first", one map per row of input 0 holding that row's first
// element.
func double(in []onnxrt.Tensor) []onnxrt.Tensor {
	out := make([]onnxrt.Tensor, 0, len(in)+1)
	for _, t := range in {
		o := onnxrt.Tensor{Name: t.Name + "2", Shape: slices.Clone(t.Shape)}
		switch {
		case t.Float32 != nil:
			o.Float32 = each(t.Float32, func(v float32) float32 { return 2 * v })
		case t.Float64 != nil:
			o.Float64 = each(t.Float64, func(v float64) float64 { return 2 * v })
		case t.Int64 != nil:
			o.Int64 = each(t.Int64, func(v int64) int64 { return 2 * v })
		case t.Int32 != nil:
			o.Int32 = each(t.Int32, func(v int32) int32 { return 2 * v })
		case t.Int8 != nil:
			o.Int8 = each(t.Int8, func(v int8) int8 { return 2 * v })
		case t.Uint8 != nil:
			o.Uint8 = each(t.Uint8, func(v uint8) uint8 { return 2 * v })
		case t.Bool != nil:
			o.Bool = each(t.Bool, func(v bool) bool { return !v })
		case t.Strings != nil:
			o.Strings = each(t.Strings, func(v string) string { return v + v })
		}
		out = append(out, o)
	}
	t := &in[0]
	rows := int(t.Shape[0])
	width := t.Len() / rows
	maps := make([]map[string]float32, rows)
	for r := range maps {
		var v float32
		switch {
		case t.Float32 != nil:
			v = t.Float32[r*width]
		case t.Int64 != nil:
			v = float32(t.Int64[r*width])
		case t.Strings != nil:
			v = float32(len(t.Strings[r*width]))
		}
		maps[r] = map[string]float32{"first": v}
	}
	return append(out, onnxrt.Tensor{Name: "first", Shape: []int64{int64(rows)}, Maps: maps})
}

func each[T any](s []T, f func(T) T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

// rowsX is a request of one float32 input "x" [rows, width], its values
// starting at base.
func rowsX(rows, width int, base float32) []onnxrt.Tensor {
	x := make([]float32, rows*width)
	for i := range x {
		x[i] = base + float32(i)
	}
	return []onnxrt.Tensor{{Name: "x", Shape: []int64{int64(rows), int64(width)}, Float32: x}}
}

// result is what one Run returned, and when.
type result struct {
	i   int
	out []onnxrt.Tensor
	err error
	at  time.Duration
}

// TestDispatchTiming checks when batches leave the queue, on synctest's
// clock: a full batch at once however long MaxDelay is, an incomplete one
// when its oldest request has waited MaxDelay, a request that does not fit
// closing the batch before it.
func TestDispatchTiming(t *testing.T) {
	type req struct {
		rows     int
		at, want time.Duration // when Run is called, when it should return
	}
	long := 10 * time.Second
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		opt  Options
		reqs []req
		want []int // rows of each run, sorted
	}{
		{"full batch of single rows does not wait", Options{MaxBatch: 4, MaxDelay: long},
			[]req{{1, 0, 0}, {1, 0, 0}, {1, 0, 0}, {1, 0, 0}}, []int{4}},
		{"the request completing a batch dispatches it", Options{MaxBatch: 4, MaxDelay: long},
			[]req{{2, 0, 3 * time.Second}, {2, 3 * time.Second, 3 * time.Second}}, []int{4}},
		{"a full request does not wait", Options{MaxBatch: 4, MaxDelay: long},
			[]req{{4, 0, 0}}, []int{4}},
		{"a request larger than MaxBatch runs alone at once", Options{MaxBatch: 4, MaxDelay: long},
			[]req{{6, 0, 0}}, []int{6}},
		{"a request that does not fit closes the batch before it", Options{MaxBatch: 4, MaxDelay: long},
			[]req{{3, 0, ms}, {3, ms, ms + long}}, []int{3, 3}},
		{"a lone request waits MaxDelay", Options{MaxBatch: 8, MaxDelay: 5 * ms},
			[]req{{1, 0, 5 * ms}}, []int{1}},
		{"a later request joins the oldest's batch at its deadline", Options{MaxBatch: 8, MaxDelay: 5 * ms},
			[]req{{1, 0, 5 * ms}, {2, 2 * ms, 5 * ms}}, []int{3}},
		{"after a dispatch the next request waits its own delay", Options{MaxBatch: 8, MaxDelay: 5 * ms},
			[]req{{1, 0, 5 * ms}, {1, 6 * ms, 11 * ms}}, []int{1, 1}},
		{"MaxDelay 0 dispatches at once", Options{MaxBatch: 8},
			[]req{{1, 0, 0}}, []int{1}},
		{"MaxBatch 1 never batches", Options{MaxBatch: 1, MaxDelay: long},
			[]req{{1, 0, 0}, {1, 0, 0}, {1, 0, 0}, {3, 0, 0}}, []int{1, 1, 1, 3}},
		{"MaxBatch 0 never batches", Options{MaxDelay: long},
			[]req{{1, 0, 0}, {1, 0, 0}, {2, 0, 0}}, []int{1, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{}
				b := New(f.run, tc.opt)
				defer b.Close()
				start := time.Now()
				results := make(chan result, len(tc.reqs))
				for i, r := range tc.reqs {
					go func() {
						time.Sleep(r.at)
						in := rowsX(r.rows, 3, float32(100*i))
						out, err := b.Run(context.Background(), in)
						if err == nil && !reflect.DeepEqual(out, double(in)) {
							err = fmt.Errorf("got %v, want %v", out, double(in))
						}
						results <- result{i: i, err: err, at: time.Since(start)}
					}()
				}
				for range tc.reqs {
					res := <-results
					if res.err != nil {
						t.Errorf("request %d: %v", res.i, res.err)
					}
					if want := tc.reqs[res.i].want; res.at != want {
						t.Errorf("request %d returned after %v, want %v", res.i, res.at, want)
					}
				}
				if got := f.sizes(); !slices.Equal(got, tc.want) {
					t.Errorf("runs of %v rows, want %v", got, tc.want)
				}
				st := b.Stats()
				rows := 0
				for _, r := range tc.reqs {
					rows += r.rows
				}
				if st.Batches != int64(len(tc.want)) || st.Rows != int64(rows) || st.Requests != int64(len(tc.reqs)) ||
					st.AvgBatch != float64(rows)/float64(len(tc.want)) || st.QueueDepth != 0 {
					t.Errorf("Stats %+v", st)
				}
			})
		})
	}
}

// TestRowsComeBack is a property test: random request sizes (some larger
// than MaxBatch), two shapes of request, many goroutines; every caller gets
// exactly what running its request alone gives.
func TestRowsComeBack(t *testing.T) {
	for _, opt := range []Options{
		{MaxBatch: 8, MaxDelay: 200 * time.Microsecond},
		{MaxBatch: 16, Workers: 2},
		{MaxBatch: 5, MaxDelay: time.Millisecond, Workers: 3},
		{MaxBatch: 1},
	} {
		t.Run(fmt.Sprintf("MaxBatch=%d,MaxDelay=%v,Workers=%d", opt.MaxBatch, opt.MaxDelay, opt.Workers), func(t *testing.T) {
			const goroutines, each = 16, 40
			opt.MaxQueue = goroutines
			f := &fake{}
			b := New(f.run, opt)
			defer b.Close()
			var wg sync.WaitGroup
			var mu sync.Mutex
			var rows, oversize int
			for g := range goroutines {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					for i := range each {
						n := 1 + rng.IntN(opt.MaxBatch+2)
						in := request3(n, 2+rng.IntN(2), float32(g*10000+i*100))
						out, err := b.Run(context.Background(), in)
						if err != nil {
							t.Errorf("goroutine %d request %d: %v", g, i, err)
							return
						}
						if want := double(in); !reflect.DeepEqual(out, want) {
							t.Errorf("goroutine %d request %d of %d rows:\n got %v\nwant %v", g, i, n, out, want)
							return
						}
						mu.Lock()
						rows += n
						if n > max(opt.MaxBatch, 1) {
							oversize++
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			over := 0
			for _, n := range f.sizes() {
				if n > max(opt.MaxBatch, 1) {
					over++
				}
			}
			if over != oversize {
				t.Errorf("%d runs larger than MaxBatch, but %d requests were", over, oversize)
			}
			st := b.Stats()
			if st.Requests != goroutines*each || st.Rows != int64(rows) {
				t.Errorf("Stats %+v, want %d requests and %d rows", st, goroutines*each, rows)
			}
			t.Logf("%d runs, %.1f rows per run", st.Batches, st.AvgBatch)
		})
	}
}

// request3 is a request of three inputs: float32 "x" [rows, width], int64
// "id" [rows] and string "tag" [rows, 1].
func request3(rows, width int, base float32) []onnxrt.Tensor {
	in := rowsX(rows, width, base)
	ids := make([]int64, rows)
	tags := make([]string, rows)
	for r := range rows {
		ids[r] = int64(base) + int64(r)
		tags[r] = fmt.Sprintf("tag%d", int(base)+r)
	}
	return append(in,
		onnxrt.Tensor{Name: "id", Shape: []int64{int64(rows)}, Int64: ids},
		onnxrt.Tensor{Name: "tag", Shape: []int64{int64(rows), 1}, Strings: tags})
}

// TestIncompatibleRequests checks that requests differing in input names,
// element types or trailing dimensions go in different batches.
func TestIncompatibleRequests(t *testing.T) {
	f32 := func(name string, shape ...int64) onnxrt.Tensor {
		n, _ := elements(shape)
		return onnxrt.Tensor{Name: name, Shape: shape, Float32: make([]float32, n)}
	}
	i64 := func(name string, shape ...int64) onnxrt.Tensor {
		n, _ := elements(shape)
		return onnxrt.Tensor{Name: name, Shape: shape, Int64: make([]int64, n)}
	}
	for _, tc := range []struct {
		name string
		reqs [][]onnxrt.Tensor
		want []int
	}{
		{"same", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {f32("x", 2, 3)}}, []int{3}},
		{"trailing dimension", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {f32("x", 1, 4)}}, []int{1, 1}},
		{"rank", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {f32("x", 1, 3, 1)}}, []int{1, 1}},
		{"element type", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {i64("x", 1, 3)}}, []int{1, 1}},
		{"name", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {f32("y", 1, 3)}}, []int{1, 1}},
		{"number of inputs", [][]onnxrt.Tensor{{f32("x", 1, 3)}, {f32("x", 1, 3), f32("y", 1, 2)}}, []int{1, 1}},
		{"input order", [][]onnxrt.Tensor{{f32("x", 1, 3), f32("y", 1, 2)}, {f32("y", 1, 2), f32("x", 1, 3)}}, []int{1, 1}},
		{"two kinds interleaved", [][]onnxrt.Tensor{
			{f32("x", 1, 3)}, {i64("x", 2, 3)}, {f32("x", 2, 3)}, {i64("x", 1, 3)}, {f32("x", 1, 3)},
		}, []int{3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{}
				b := New(f.run, Options{MaxBatch: 8, MaxDelay: time.Millisecond})
				defer b.Close()
				var wg sync.WaitGroup
				for i, in := range tc.reqs {
					// Distinct values per request, to see rows land right.
					for j := range in {
						for k := range in[j].Float32 {
							in[j].Float32[k] = float32(i*100 + k)
						}
						for k := range in[j].Int64 {
							in[j].Int64[k] = int64(i*100 + k)
						}
					}
					wg.Go(func() {
						out, err := b.Run(context.Background(), in)
						if err != nil || !reflect.DeepEqual(out, double(in)) {
							t.Errorf("request %d: %v, %v; want %v", i, out, err, double(in))
						}
					})
				}
				wg.Wait()
				if got := f.sizes(); !slices.Equal(got, tc.want) {
					t.Errorf("runs of %v rows, want %v", got, tc.want)
				}
			})
		})
	}
}

// TestOverloaded checks that a request finding MaxQueue requests waiting is
// refused at once, batching on or off.
func TestOverloaded(t *testing.T) {
	for _, tc := range []struct {
		maxBatch int
		want     []int
	}{
		{2, []int{2, 2}},
		{1, []int{1, 1, 2}},
	} {
		t.Run(fmt.Sprintf("MaxBatch=%d", tc.maxBatch), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{gate: make(chan struct{})}
				b := New(f.run, Options{MaxBatch: tc.maxBatch, MaxQueue: 2, MaxDelay: time.Second})
				defer b.Close()
				errs := make(chan error, 3)
				call := func(rows int) {
					_, err := b.Run(context.Background(), rowsX(rows, 1, 0))
					errs <- err
				}
				go call(2) // full: runs, and waits on the gate
				synctest.Wait()
				go call(1) // these two fill the queue: the only worker is busy
				go call(1)
				synctest.Wait()
				if st := b.Stats(); st.QueueDepth != 2 {
					t.Fatalf("QueueDepth %d, want 2", st.QueueDepth)
				}
				start := time.Now()
				if _, err := b.Run(context.Background(), rowsX(1, 1, 0)); !errors.Is(err, ErrOverloaded) {
					t.Errorf("Run on a full queue: %v, want ErrOverloaded", err)
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("ErrOverloaded after %v, want at once", d)
				}
				if st := b.Stats(); st.Overloads != 1 {
					t.Errorf("Overloads %d, want 1", st.Overloads)
				}
				close(f.gate)
				for range 3 {
					if err := <-errs; err != nil {
						t.Error(err)
					}
				}
				if got := f.sizes(); !slices.Equal(got, tc.want) {
					t.Errorf("runs of %v rows, want %v", got, tc.want)
				}
			})
		})
	}
}

// TestCancelQueued checks that a request whose context ends while it waits
// leaves the queue: it returns the context's error at that moment, and its
// rows are not run.
func TestCancelQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fake{}
		b := New(f.run, Options{MaxBatch: 4, MaxDelay: 10 * time.Millisecond})
		defer b.Close()
		start := time.Now()
		done := make(chan result, 2)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
			defer cancel()
			out, err := b.Run(ctx, rowsX(1, 3, 0))
			done <- result{i: 0, out: out, err: err, at: time.Since(start)}
		}()
		go func() {
			in := rowsX(2, 3, 100)
			out, err := b.Run(context.Background(), in)
			if err == nil && !reflect.DeepEqual(out, double(in)) {
				err = fmt.Errorf("got %v", out)
			}
			done <- result{i: 1, out: out, err: err, at: time.Since(start)}
		}()
		for range 2 {
			r := <-done
			switch r.i {
			case 0:
				if !errors.Is(r.err, context.DeadlineExceeded) || r.out != nil || r.at != 2*time.Millisecond {
					t.Errorf("cancelled request: %v, %v after %v; want DeadlineExceeded after 2ms", r.out, r.err, r.at)
				}
			case 1:
				if r.err != nil || r.at != 10*time.Millisecond {
					t.Errorf("other request: %v after %v, want success after 10ms", r.err, r.at)
				}
			}
		}
		if got := f.sizes(); !slices.Equal(got, []int{2}) {
			t.Errorf("runs of %v rows, want [2]: the cancelled row must not run", got)
		}
		if st := b.Stats(); st.Cancelled != 1 || st.QueueDepth != 0 {
			t.Errorf("Stats %+v", st)
		}
	})
}

// TestCancelQueuedAlone is TestCancelQueued with batching off: the request
// waits for the busy worker, and leaves when its context ends.
func TestCancelQueuedAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fake{gate: make(chan struct{})}
		b := New(f.run, Options{MaxBatch: 1})
		defer b.Close()
		busy := make(chan error, 1)
		go func() {
			_, err := b.Run(context.Background(), rowsX(2, 1, 0))
			busy <- err
		}()
		synctest.Wait()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		defer cancel()
		if _, err := b.Run(ctx, rowsX(1, 1, 0)); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Millisecond {
			t.Errorf("queued request: %v after %v; want DeadlineExceeded after 2ms", err, time.Since(start))
		}
		if st := b.Stats(); st.Cancelled != 1 || st.QueueDepth != 0 {
			t.Errorf("Stats %+v", st)
		}
		close(f.gate)
		if err := <-busy; err != nil {
			t.Error(err)
		}
		if got := f.sizes(); !slices.Equal(got, []int{2}) {
			t.Errorf("runs of %v rows, want [2]: the cancelled request must not run", got)
		}
	})
}

// TestCancelRunning checks that a caller giving up while its batch runs gets
// its context's error at once, the batch goes on for the others, and the run
// is cancelled only when every caller has given up.
func TestCancelRunning(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cancel        []bool // per request
		wantCancelled int    // runs that saw their context end
	}{
		{"one of two gives up", []bool{true, false}, 0},
		{"both give up", []bool{true, true}, 1},
		{"a lone request gives up", []bool{true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{gate: make(chan struct{})}
				b := New(f.run, Options{MaxBatch: len(tc.cancel), MaxDelay: time.Hour})
				defer b.Close()
				done := make([]chan error, len(tc.cancel))
				cancels := make([]context.CancelFunc, len(tc.cancel))
				for i := range tc.cancel {
					ctx, cancel := context.WithCancel(context.Background())
					cancels[i], done[i] = cancel, make(chan error, 1)
					go func() {
						in := rowsX(1, 2, float32(10*i))
						out, err := b.Run(ctx, in)
						if err == nil && !reflect.DeepEqual(out, double(in)) {
							err = fmt.Errorf("got %v", out)
						}
						done[i] <- err
					}()
				}
				synctest.Wait() // the batch is running, held by the gate
				if running, _ := f.stat(); running != 1 {
					t.Fatalf("%d runs in progress, want 1", running)
				}
				for i, c := range tc.cancel {
					if c {
						cancels[i]()
						if err := <-done[i]; !errors.Is(err, context.Canceled) {
							t.Errorf("request %d: %v, want context.Canceled", i, err)
						}
					}
				}
				synctest.Wait()
				if _, cancelled := f.stat(); cancelled != tc.wantCancelled {
					t.Errorf("%d runs cancelled, want %d", cancelled, tc.wantCancelled)
				}
				close(f.gate)
				for i, c := range tc.cancel {
					if !c {
						if err := <-done[i]; err != nil {
							t.Errorf("request %d: %v", i, err)
						}
					}
				}
				for _, cancel := range cancels {
					cancel()
				}
			})
		})
	}
}

// TestRunFails checks that a failed run fails every request in it, and only
// those.
func TestRunFails(t *testing.T) {
	// A run fails when any of its values is negative.
	negative := func(in []onnxrt.Tensor) error {
		for _, t := range in {
			for _, v := range t.Float32 {
				if v < 0 {
					return errBoom
				}
			}
		}
		return nil
	}
	for _, tc := range []struct {
		name  string
		reqs  [][]onnxrt.Tensor
		wantE []bool
	}{
		{"one bad request fails its batch", [][]onnxrt.Tensor{rowsX(1, 2, 0), rowsX(1, 2, -5), rowsX(1, 2, 10)}, []bool{true, true, true}},
		{"other batches are not touched", [][]onnxrt.Tensor{rowsX(1, 2, 0), rowsX(1, 2, -5), rowsX(1, 3, 10)}, []bool{true, true, false}},
		{"a lone bad request", [][]onnxrt.Tensor{rowsX(1, 2, -5)}, []bool{true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{fail: negative}
				b := New(f.run, Options{MaxBatch: 8, MaxDelay: time.Millisecond})
				defer b.Close()
				var wg sync.WaitGroup
				for i, in := range tc.reqs {
					wg.Go(func() {
						out, err := b.Run(context.Background(), in)
						if tc.wantE[i] {
							if !errors.Is(err, errBoom) || out != nil {
								t.Errorf("request %d: %v, %v; want errBoom", i, out, err)
							}
						} else if err != nil {
							t.Errorf("request %d: %v", i, err)
						}
					})
				}
				wg.Wait()
				failed := 0
				for _, e := range tc.wantE {
					if e {
						failed++
					}
				}
				if st := b.Stats(); st.Failed != int64(failed) {
					t.Errorf("Failed %d, want %d", st.Failed, failed)
				}
			})
		})
	}
}

// TestBadOutput checks that an output whose dimension 0 is not the batch's
// row count is an error naming it, batched or alone; with batching off the
// outputs pass through.
func TestBadOutput(t *testing.T) {
	// Like serving/testdata/models/misdeclared_shape.onnx: y = concat(x, x)
	// along dimension 0.
	twice := func(in []onnxrt.Tensor) []onnxrt.Tensor {
		x := in[0]
		return []onnxrt.Tensor{
			{Name: "ok", Shape: slices.Clone(x.Shape), Float32: slices.Clone(x.Float32)},
			{Name: "y", Shape: []int64{2 * x.Shape[0], x.Shape[1]}, Float32: append(slices.Clone(x.Float32), x.Float32...)},
		}
	}
	scalar := func([]onnxrt.Tensor) []onnxrt.Tensor {
		return []onnxrt.Tensor{{Name: "total", Shape: []int64{}, Float64: []float64{1}}}
	}
	for _, tc := range []struct {
		name     string
		out      func([]onnxrt.Tensor) []onnxrt.Tensor
		maxBatch int
		requests int
		bad      string // the output the error names; "" for none
	}{
		{"batched", twice, 4, 2, "y"},
		{"alone", twice, 4, 1, "y"},
		{"scalar output", scalar, 4, 2, "total"},
		{"batching off", twice, 1, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{out: tc.out}
				b := New(f.run, Options{MaxBatch: tc.maxBatch, MaxDelay: time.Millisecond})
				defer b.Close()
				var wg sync.WaitGroup
				for i := range tc.requests {
					wg.Go(func() {
						out, err := b.Run(context.Background(), rowsX(1, 2, float32(i)))
						switch {
						case tc.bad == "" && err != nil:
							t.Errorf("request %d: %v", i, err)
						case tc.bad == "" && out[1].Shape[0] != 2:
							t.Errorf("request %d: output %v not passed through", i, out[1])
						case tc.bad != "" && (!errors.Is(err, ErrBadOutput) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.bad))):
							t.Errorf("request %d: %v; want ErrBadOutput naming %q", i, err, tc.bad)
						}
					})
				}
				wg.Wait()
			})
		})
	}
}

// TestClose checks that Close runs the queued requests without waiting for
// MaxDelay, waits for running batches, and that Run afterwards is refused;
// batching on or off.
func TestClose(t *testing.T) {
	for _, tc := range []struct {
		maxBatch int
		want     []int
	}{
		{4, []int{3, 4}},
		{1, []int{1, 2, 4}},
	} {
		t.Run(fmt.Sprintf("MaxBatch=%d", tc.maxBatch), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{gate: make(chan struct{})}
				b := New(f.run, Options{MaxBatch: tc.maxBatch, MaxDelay: time.Hour})
				start := time.Now()
				var wg sync.WaitGroup
				run := func(rows int, base float32) {
					wg.Go(func() {
						in := rowsX(rows, 2, base)
						out, err := b.Run(context.Background(), in)
						if err != nil || !reflect.DeepEqual(out, double(in)) {
							t.Errorf("request at %v: %v, %v", base, out, err)
						}
					})
				}
				run(4, 0) // full: runs and holds the only worker
				synctest.Wait()
				run(1, 10)
				run(2, 20)
				synctest.Wait()
				closed := make(chan struct{})
				go func() {
					b.Close()
					close(closed)
				}()
				synctest.Wait()
				select {
				case <-closed:
					t.Fatal("Close returned while a batch was running")
				default:
				}
				if _, err := b.Run(context.Background(), rowsX(1, 2, 0)); !errors.Is(err, ErrClosed) {
					t.Errorf("Run while closing: %v, want ErrClosed", err)
				}
				close(f.gate)
				<-closed
				if got := f.sizes(); !slices.Equal(got, tc.want) {
					t.Errorf("runs of %v rows when Close returned, want %v", got, tc.want)
				}
				wg.Wait()
				if d := time.Since(start); d != 0 {
					t.Errorf("Close took %v of MaxDelay 1h", d)
				}
				b.Close() // twice: no-op
				if _, err := b.Run(context.Background(), rowsX(1, 2, 0)); !errors.Is(err, ErrClosed) {
					t.Errorf("Run after Close: %v, want ErrClosed", err)
				}
			})
		})
	}
}

// TestWorkers checks that Workers batches run at once and no more.
func TestWorkers(t *testing.T) {
	for _, workers := range []int{0, 1, 2, 3} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fake{gate: make(chan struct{})}
				b := New(f.run, Options{MaxBatch: 1, Workers: workers, MaxQueue: 8})
				defer b.Close()
				var wg sync.WaitGroup
				for range 4 {
					wg.Go(func() {
						if _, err := b.Run(context.Background(), rowsX(1, 1, 0)); err != nil {
							t.Error(err)
						}
					})
				}
				synctest.Wait()
				if running, _ := f.stat(); running != max(workers, 1) {
					t.Errorf("%d runs at once, want %d", running, max(workers, 1))
				}
				close(f.gate)
				wg.Wait()
			})
		})
	}
}

func TestInvalidInput(t *testing.T) {
	b := New((&fake{}).run, Options{MaxBatch: 4})
	defer b.Close()
	for _, tc := range []struct {
		name string
		in   []onnxrt.Tensor
	}{
		{"no inputs", nil},
		{"scalar", []onnxrt.Tensor{{Name: "x", Shape: []int64{}, Float32: []float32{1}}}},
		{"zero rows", []onnxrt.Tensor{{Name: "x", Shape: []int64{0, 3}, Float32: []float32{}}}},
		{"rows differ", []onnxrt.Tensor{
			{Name: "x", Shape: []int64{2, 1}, Float32: []float32{1, 2}},
			{Name: "y", Shape: []int64{1}, Int64: []int64{1}},
		}},
		{"data does not match shape", []onnxrt.Tensor{{Name: "x", Shape: []int64{2, 3}, Float32: []float32{1, 2}}}},
		{"negative dimension", []onnxrt.Tensor{{Name: "x", Shape: []int64{1, -1}, Float32: []float32{1}}}},
		{"no data", []onnxrt.Tensor{{Name: "x", Shape: []int64{1}}}},
		{"two data slices", []onnxrt.Tensor{{Name: "x", Shape: []int64{1}, Float32: []float32{1}, Int64: []int64{1}}}},
		{"maps", []onnxrt.Tensor{{Name: "x", Shape: []int64{1}, Maps: []map[string]float32{{}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.Run(context.Background(), tc.in); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("Run: %v, want ErrInvalidInput", err)
			}
		})
	}
	if st := b.Stats(); st.Batches != 0 || st.QueueDepth != 0 {
		t.Errorf("Stats %+v after refused requests", st)
	}

	// With batching off, inputs are the RunFunc's business.
	var got []onnxrt.Tensor
	pass := New(func(_ context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
		got = in
		return in, nil
	}, Options{})
	defer pass.Close()
	scalar := []onnxrt.Tensor{{Name: "s", Shape: []int64{}, Float32: []float32{1}}}
	if out, err := pass.Run(context.Background(), scalar); err != nil || &out[0] != &scalar[0] || &got[0] != &scalar[0] {
		t.Errorf("batching off: %v, %v; want the tensors passed through", out, err)
	}
}

func TestDoneContext(t *testing.T) {
	f := &fake{}
	b := New(f.run, Options{MaxBatch: 4})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Run(ctx, rowsX(1, 1, 0)); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a done context: %v", err)
	}
	if len(f.sizes()) != 0 {
		t.Error("a request with a done context ran")
	}
}

// TestAllTypes checks concatenation and splitting of every element type the
// Tensor carries, and that the concatenation buffers, reused from batch to
// batch, never leak one batch's values into another's results.
func TestAllTypes(t *testing.T) {
	mk := func(rows int, base int) []onnxrt.Tensor {
		n := rows * 2
		in := []onnxrt.Tensor{
			{Name: "f32", Shape: []int64{int64(rows), 2}, Float32: make([]float32, n)},
			{Name: "f64", Shape: []int64{int64(rows), 2}, Float64: make([]float64, n)},
			{Name: "i64", Shape: []int64{int64(rows), 2}, Int64: make([]int64, n)},
			{Name: "i32", Shape: []int64{int64(rows), 2}, Int32: make([]int32, n)},
			{Name: "i8", Shape: []int64{int64(rows), 2}, Int8: make([]int8, n)},
			{Name: "u8", Shape: []int64{int64(rows), 2}, Uint8: make([]uint8, n)},
			{Name: "bool", Shape: []int64{int64(rows), 2}, Bool: make([]bool, n)},
			{Name: "str", Shape: []int64{int64(rows), 2}, Strings: make([]string, n)},
			{Name: "empty", Shape: []int64{int64(rows), 0}, Float32: []float32{}},
		}
		for i := range n {
			v := base + i
			in[0].Float32[i], in[1].Float64[i], in[2].Int64[i], in[3].Int32[i] = float32(v), float64(v), int64(v), int32(v)
			in[4].Int8[i], in[5].Uint8[i], in[6].Bool[i], in[7].Strings[i] = int8(v), uint8(v), v%3 == 0, fmt.Sprint(v)
		}
		return in
	}
	synctest.Test(t, func(t *testing.T) {
		f := &fake{}
		b := New(f.run, Options{MaxBatch: 6, MaxDelay: time.Millisecond})
		defer b.Close()
		for round := range 3 {
			var wg sync.WaitGroup
			for i, rows := range []int{1, 3, 2} {
				wg.Go(func() {
					in := mk(rows, round*1000+i*10)
					out, err := b.Run(context.Background(), in)
					if err != nil || !reflect.DeepEqual(out, double(in)) {
						t.Errorf("round %d request %d:\n got %v, %v\nwant %v", round, i, out, err, double(in))
					}
				})
			}
			wg.Wait()
		}
		if got := f.sizes(); !slices.Equal(got, []int{6, 6, 6}) {
			t.Errorf("runs of %v rows, want [6 6 6]", got)
		}
	})
}

// TestOutputsAreDisjoint checks that appending to one caller's output never
// writes into another caller's rows.
func TestOutputsAreDisjoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New((&fake{}).run, Options{MaxBatch: 2, MaxDelay: time.Hour})
		defer b.Close()
		outs := make([][]onnxrt.Tensor, 2)
		var wg sync.WaitGroup
		for i := range outs {
			wg.Go(func() {
				var err error
				if outs[i], err = b.Run(context.Background(), request3(1, 2, float32(10*i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		want := make([][]onnxrt.Tensor, len(outs))
		for i, out := range outs {
			want[i] = clone(out)
		}
		for _, out := range outs {
			for _, t := range out {
				_ = append(t.Float32, -1)
				_ = append(t.Int64, -1)
				_ = append(t.Strings, "-1")
				_ = append(t.Maps, nil)
			}
			_ = append(out, onnxrt.Tensor{Name: "extra"})
		}
		if !reflect.DeepEqual(outs, want) {
			t.Errorf("appending to the callers' outputs changed them:\n got %v\nwant %v", outs, want)
		}
	})
}

func clone(ts []onnxrt.Tensor) []onnxrt.Tensor {
	out := make([]onnxrt.Tensor, len(ts))
	for i, t := range ts {
		out[i] = onnxrt.Tensor{
			Name: t.Name, Shape: slices.Clone(t.Shape),
			Float32: slices.Clone(t.Float32), Int64: slices.Clone(t.Int64),
			Strings: slices.Clone(t.Strings), Maps: slices.Clone(t.Maps),
		}
	}
	return out
}

// TestOldestFirst checks that when several incompatible queues are ready at
// once, the one holding the oldest request runs first.
func TestOldestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fake{gate: make(chan struct{})}
		b := New(f.run, Options{MaxBatch: 4, MaxDelay: time.Millisecond})
		defer b.Close()
		var wg sync.WaitGroup
		run := func(rows, width int) {
			wg.Go(func() {
				if _, err := b.Run(context.Background(), rowsX(rows, width, 0)); err != nil {
					t.Error(err)
				}
			})
		}
		run(4, 1) // full: holds the only worker
		synctest.Wait()
		run(1, 2) // then, one per shape, each older than the next
		time.Sleep(time.Microsecond)
		run(2, 3)
		time.Sleep(time.Microsecond)
		run(3, 4)
		time.Sleep(time.Microsecond)
		run(1, 2)
		time.Sleep(10 * time.Millisecond) // all ready, waiting for the worker
		for range 4 {
			f.gate <- struct{}{}
		}
		wg.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		if want := []int{4, 2, 2, 3}; !slices.Equal(f.runs, want) {
			t.Errorf("runs of %v rows in this order, want %v", f.runs, want)
		}
	})
}
