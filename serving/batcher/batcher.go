// Package batcher groups concurrent inference requests for one model into
// batches, with the semantics of Triton's dynamic batcher:
//
//   - a batch is dispatched as soon as it holds MaxBatch rows, never waiting
//     then, or when the oldest request in it has waited MaxDelay;
//   - while every worker is busy, requests keep queueing and the next free
//     worker takes up to MaxBatch rows at once, so batches grow with load;
//   - only compatible requests share a batch: same input names in the same
//     order, same element types, same dimensions after the batch dimension;
//   - a request larger than MaxBatch runs alone;
//   - a full queue refuses new requests at once (ErrOverloaded).
//
// A batch's inputs are concatenated along dimension 0, run once, and every
// output is split back by row ranges, so each caller receives exactly its own
// rows (numeric tensors, Strings and Maps alike). A request that runs alone
// goes to the RunFunc as it is, without a copy.
//
// Allocations: each worker keeps its concatenation buffers from batch to
// batch (bounded by MaxBatch rows); the callers' outputs are subslices of the
// run's outputs, not copies; request records are recycled once their caller
// has its result. With batching off (MaxBatch 0 or 1) a request runs on its
// caller's goroutine as soon as one of the Workers is free, without the
// dispatcher's hand-offs.
package batcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailorhq/tailor/serving/onnxrt"
)

var (
	// ErrOverloaded is returned by Run when MaxQueue requests are already
	// waiting.
	ErrOverloaded = errors.New("batcher: queue full")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("batcher: closed")
	// ErrInvalidInput is wrapped by the errors for requests that cannot be
	// batched: no inputs, a tensor without a batch dimension, tensors with
	// different numbers of rows, a data slice that does not match its shape.
	ErrInvalidInput = errors.New("batcher: invalid input")
	// ErrBadOutput is wrapped by the error for a batched run whose output
	// cannot be split by rows (its dimension 0 is not the batch's row
	// count); the message names the output.
	ErrBadOutput = errors.New("batcher: output cannot be split into rows")
)

// RunFunc runs one batch (typically (*onnxrt.Session).Run). It must not keep
// its inputs after it returns, and its outputs must not share memory with
// its inputs: the batcher reuses its concatenation buffers for the next
// batch. (*onnxrt.Session).Run satisfies both.
type RunFunc func(ctx context.Context, inputs []onnxrt.Tensor) ([]onnxrt.Tensor, error)

// Options configures a Batcher.
type Options struct {
	// MaxBatch is the most rows a batched run holds; 0 or 1 disables
	// batching (every request runs alone, its inputs and outputs passed
	// through untouched).
	MaxBatch int
	// MaxDelay is how long the oldest queued request may wait for others
	// before its batch is dispatched incomplete; 0 dispatches at once
	// (batches then only form while every worker is busy).
	MaxDelay time.Duration
	// MaxQueue is the most requests waiting for a batch (not counting those
	// running); beyond it Run returns ErrOverloaded at once. 0 means
	// 8*MaxBatch (8 when batching is disabled).
	MaxQueue int
	// Workers is how many batches run at once (default 1: a session's own
	// thread pool parallelises inside a run).
	Workers int
}

// Stats counts what a Batcher has done since New.
type Stats struct {
	Batches    int64   // runs of the RunFunc
	Rows       int64   // rows in those runs
	Requests   int64   // requests those runs served
	AvgBatch   float64 // rows per run: Rows / Batches
	QueueDepth int     // requests waiting now
	Overloads  int64   // requests refused with ErrOverloaded
	Cancelled  int64   // requests whose context ended before their result
	Failed     int64   // requests whose run returned an error
}

// Batcher queues requests for one RunFunc and runs them in batches. It is
// safe for concurrent use.
type Batcher struct {
	run      RunFunc
	maxBatch int // >= 1
	maxDelay time.Duration
	maxQueue int
	workers  int
	batching bool // maxBatch > 1

	mu     sync.Mutex
	groups []*group // non-empty queues of mutually compatible requests
	spare  []*group // empty groups kept for their queue's capacity
	queued int      // requests in groups
	idle   int      // workers waiting for a batch
	closed bool

	// free recycles the requests whose callers got their result. A request
	// whose caller gave up while it ran is left to the garbage collector:
	// its batch may still write to it.
	free sync.Pool

	wake chan struct{}  // capacity 1: something may have become ready
	work chan *batch    // capacity workers: batches for the workers
	wg   sync.WaitGroup // the dispatcher and the workers; with batching off, the Runs in flight

	// slots, with batching off, holds a token per run in progress.
	slots chan struct{}

	batches, rows, requests    atomic.Int64
	overloads, cancelled, fail atomic.Int64
}

// request is one caller's Run.
type request struct {
	pool     *sync.Pool // Batcher.free
	ctx      context.Context
	inputs   []onnxrt.Tensor
	rows     int
	enqueued time.Time
	g        *group
	batch    *batch        // set, under Batcher.mu, when the request leaves the queue
	done     chan struct{} // capacity 1: receives once out and err are set
	out      []onnxrt.Tensor
	err      error
}

// group is a FIFO queue of compatible requests.
type group struct {
	q    []*request
	rows int
}

// batch is a set of requests run together.
type batch struct {
	reqs []*request
	rows int
	// ctx and cancel are set for batches of several requests: the run is
	// cancelled once every caller has given up (live reaches 0). A lone
	// request runs under its own context.
	ctx    context.Context
	cancel context.CancelFunc
	live   atomic.Int32
}

// New starts a Batcher that runs batches with run. Close it to stop its
// goroutines.
func New(run RunFunc, opt Options) *Batcher {
	if run == nil {
		panic("batcher: nil RunFunc")
	}
	b := &Batcher{
		run:      run,
		maxBatch: max(opt.MaxBatch, 1),
		maxDelay: max(opt.MaxDelay, 0),
		maxQueue: opt.MaxQueue,
		workers:  opt.Workers,
	}
	b.batching = b.maxBatch > 1
	if b.maxQueue <= 0 {
		b.maxQueue = 8 * b.maxBatch
	}
	if b.workers <= 0 {
		b.workers = 1
	}
	if !b.batching {
		// Every request runs alone, on its caller's goroutine: no queue to
		// manage, only Workers runs at once.
		b.slots = make(chan struct{}, b.workers)
		return b
	}
	b.idle = b.workers
	b.wake = make(chan struct{}, 1)
	b.work = make(chan *batch, b.workers)
	b.wg.Add(1 + b.workers)
	go b.dispatch()
	for range b.workers {
		go b.serve()
	}
	return b
}

// Run queues one request, waits for its batch, and returns its own rows of
// every output. Its tensors must all have the same number of rows n >= 1
// (dimension 0). If ctx ends while the request is queued, it leaves the
// queue; if it ends while its batch runs, the batch goes on for the others.
// Either way Run returns ctx.Err().
//
// The outputs' data are subslices of the batch's outputs, disjoint and
// capped at their length: they are the caller's.
//
// With batching off, the request runs on the caller's goroutine under ctx
// once one of the Workers is free, its inputs and outputs passed through as
// they are; a caller whose ctx ends during the run gets ctx.Err() when the
// RunFunc returns.
func (b *Batcher) Run(ctx context.Context, inputs []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !b.batching {
		return b.runAlone(ctx, inputs)
	}
	rows, err := rowsOf(inputs)
	if err != nil {
		return nil, err
	}
	r, _ := b.free.Get().(*request)
	if r == nil {
		r = &request{pool: &b.free, done: make(chan struct{}, 1)}
	}
	r.ctx, r.inputs, r.rows = ctx, inputs, rows

	b.mu.Lock()
	if b.closed || b.queued >= b.maxQueue {
		closed := b.closed
		b.mu.Unlock()
		r.recycle()
		if closed {
			return nil, ErrClosed
		}
		b.overloads.Add(1)
		return nil, ErrOverloaded
	}
	r.enqueued = time.Now()
	g, fresh := b.groupFor(r)
	r.g = g
	g.q = append(g.q, r)
	g.rows += r.rows
	b.queued++
	// The dispatcher's timer covers the deadlines of queues it has seen; it
	// needs waking for a new queue, a full batch, or no delay at all, and
	// only when a worker is free to take the batch.
	wake := b.idle > 0 && (fresh || g.rows >= b.maxBatch || b.maxDelay == 0)
	b.mu.Unlock()
	if wake {
		b.signal()
	}

	if ctx.Done() == nil { // cannot end: a plain receive is cheaper than select
		<-r.done
		return r.result()
	}
	select {
	case <-r.done:
		return r.result()
	case <-ctx.Done():
		return b.abandon(r)
	}
}

// result returns the request's outcome and recycles it. Call it only after
// receiving from r.done.
func (r *request) result() ([]onnxrt.Tensor, error) {
	out, err := r.out, r.err
	r.recycle()
	return out, err
}

func (r *request) recycle() {
	*r = request{pool: r.pool, done: r.done}
	r.pool.Put(r)
}

// finish hands the request's outcome to its caller. The request belongs to
// the caller from then on.
func (r *request) finish(out []onnxrt.Tensor, err error) {
	r.out, r.err = out, err
	r.done <- struct{}{}
}

// runAlone runs a request with batching off.
func (b *Batcher) runAlone(ctx context.Context, inputs []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	select {
	case b.slots <- struct{}{}: // a worker is free: no queueing
		b.wg.Add(1) // under b.mu, after the closed check: Close waits for it
		b.mu.Unlock()
	default:
		if b.queued >= b.maxQueue {
			b.mu.Unlock()
			b.overloads.Add(1)
			return nil, ErrOverloaded
		}
		b.queued++
		b.wg.Add(1)
		b.mu.Unlock()
		var err error
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.queued--
		b.mu.Unlock()
		if err != nil {
			b.cancelled.Add(1)
			b.wg.Done()
			return nil, err
		}
	}
	defer b.wg.Done()

	rows := 1 // for Stats
	if len(inputs) > 0 && len(inputs[0].Shape) > 0 && inputs[0].Shape[0] > 0 {
		rows = int(inputs[0].Shape[0])
	}
	b.batches.Add(1)
	b.rows.Add(int64(rows))
	b.requests.Add(1)
	out, err := b.run(ctx, inputs)
	<-b.slots
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			b.cancelled.Add(1)
			return nil, ctxErr
		}
		b.fail.Add(1)
		return nil, err
	}
	return out, nil
}

// abandon handles a caller whose context ended before its result.
func (b *Batcher) abandon(r *request) ([]onnxrt.Tensor, error) {
	select {
	case <-r.done: // finished meanwhile: the result is worth more than the error
		return r.result()
	default:
	}
	b.cancelled.Add(1)
	err := r.ctx.Err()
	b.mu.Lock()
	bt := r.batch
	if bt == nil { // still queued: leave the queue
		b.remove(r)
		wake := b.closed // Close may be waiting for the queue to empty
		b.mu.Unlock()
		r.recycle()
		if wake {
			b.signal()
		}
		return nil, err
	}
	b.mu.Unlock()
	if bt.live.Add(-1) == 0 && bt.cancel != nil {
		bt.cancel() // nobody waits for this batch any more
	}
	return nil, err
}

// Close stops accepting requests (Run returns ErrClosed), dispatches the
// queued ones without waiting for MaxDelay, and returns once every batch has
// finished. Closing twice is a no-op.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.signal()
	b.wg.Wait()
}

// Stats returns the counters. They are read one by one, not as a snapshot.
func (b *Batcher) Stats() Stats {
	b.mu.Lock()
	depth := b.queued
	b.mu.Unlock()
	s := Stats{
		Batches:    b.batches.Load(),
		Rows:       b.rows.Load(),
		Requests:   b.requests.Load(),
		QueueDepth: depth,
		Overloads:  b.overloads.Load(),
		Cancelled:  b.cancelled.Load(),
		Failed:     b.fail.Load(),
	}
	if s.Batches > 0 {
		s.AvgBatch = float64(s.Rows) / float64(s.Batches)
	}
	return s
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// groupFor finds the queue r belongs to, or starts one. Called with b.mu
// held.
func (b *Batcher) groupFor(r *request) (g *group, fresh bool) {
	for _, g := range b.groups {
		if compatible(g.q[0].inputs, r.inputs) {
			return g, false
		}
	}
	if n := len(b.spare); n > 0 {
		g = b.spare[n-1]
		b.spare = b.spare[:n-1]
	} else {
		g = &group{}
	}
	b.groups = append(b.groups, g)
	return g, true
}

// remove takes a queued request out of its queue. Called with b.mu held.
func (b *Batcher) remove(r *request) {
	g := r.g
	for i, x := range g.q {
		if x == r {
			copy(g.q[i:], g.q[i+1:])
			g.q[len(g.q)-1] = nil
			g.q = g.q[:len(g.q)-1]
			g.rows -= r.rows
			b.queued--
			break
		}
	}
	if len(g.q) == 0 {
		b.dropGroup(g)
	}
}

func (b *Batcher) dropGroup(g *group) {
	for i, x := range b.groups {
		if x == g {
			last := len(b.groups) - 1
			b.groups[i] = b.groups[last]
			b.groups[last] = nil
			b.groups = b.groups[:last]
			break
		}
	}
	if len(b.spare) < 8 {
		b.spare = append(b.spare, g)
	}
}

// take forms the next batch if one is ready at now: from the queue whose
// oldest request is the oldest among the ready queues (full, past its
// delay, or closing), its requests in order up to MaxBatch rows. Otherwise
// it returns when the next queue becomes ready by its delay (zero if none).
// Called with b.mu held.
func (b *Batcher) take(now time.Time) (*batch, time.Time) {
	var best *group
	var next time.Time
	for _, g := range b.groups {
		head := g.q[0]
		deadline := head.enqueued.Add(b.maxDelay)
		if b.closed || g.rows >= b.maxBatch || !now.Before(deadline) {
			if best == nil || head.enqueued.Before(best.q[0].enqueued) {
				best = g
			}
		} else if next.IsZero() || deadline.Before(next) {
			next = deadline
		}
	}
	if best == nil {
		return nil, next
	}
	g := best
	n, rows := 0, 0
	for n < len(g.q) && rows < b.maxBatch {
		r := g.q[n]
		if n > 0 && rows+r.rows > b.maxBatch {
			break // Triton keeps order: the batch ends before a request that does not fit
		}
		rows += r.rows
		n++
	}
	bt := &batch{reqs: make([]*request, n), rows: rows}
	copy(bt.reqs, g.q[:n])
	bt.live.Store(int32(n))
	if n > 1 {
		bt.ctx, bt.cancel = context.WithCancel(context.Background())
	}
	for _, r := range bt.reqs {
		r.batch = bt
	}
	rest := copy(g.q, g.q[n:])
	clear(g.q[rest:])
	g.q = g.q[:rest]
	g.rows -= rows
	b.queued -= n
	if rest == 0 {
		b.dropGroup(g)
	}
	return bt, time.Time{}
}

// dispatch hands ready batches to idle workers, sleeping until a request
// arrives, a worker frees up, or the oldest queued request's delay ends.
func (b *Batcher) dispatch() {
	defer b.wg.Done()
	defer close(b.work)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var ready []*batch
	for {
		now := time.Now()
		b.mu.Lock()
		var next time.Time
		for b.idle > 0 {
			bt, nx := b.take(now)
			if bt == nil {
				next = nx
				break
			}
			b.idle--
			ready = append(ready, bt)
		}
		stop := b.closed && b.queued == 0
		b.mu.Unlock()
		// Never blocks: b.work holds as many batches as there are workers.
		for i, bt := range ready {
			b.work <- bt
			ready[i] = nil
		}
		ready = ready[:0]
		if stop {
			return // the workers finish what b.work holds, then exit
		}
		var expired <-chan time.Time
		if !next.IsZero() {
			timer.Reset(next.Sub(now))
			expired = timer.C
		}
		select {
		case <-b.wake:
		case <-expired:
		}
		timer.Stop()
	}
}

// serve runs batches until the dispatcher stops.
func (b *Batcher) serve() {
	defer b.wg.Done()
	var bufs concatBuffers
	for bt := range b.work {
		b.runBatch(bt, &bufs)
		b.mu.Lock()
		b.idle++
		b.mu.Unlock()
		b.signal()
	}
}

func (b *Batcher) runBatch(bt *batch, bufs *concatBuffers) {
	b.batches.Add(1)
	b.rows.Add(int64(bt.rows))
	b.requests.Add(int64(len(bt.reqs)))

	if len(bt.reqs) == 1 {
		// Alone: the caller's tensors go in and the outputs come back as
		// they are, once checked.
		r := bt.reqs[0]
		out, err := b.run(r.ctx, r.inputs)
		if err == nil {
			err = checkRows(out, r.rows)
		}
		if err != nil {
			out = nil
			b.fail.Add(1)
		}
		r.finish(out, err)
		return
	}

	inputs := bufs.concat(bt.reqs)
	out, err := b.run(bt.ctx, inputs)
	bufs.release()
	bt.cancel()
	if err == nil {
		err = checkRows(out, bt.rows)
	}
	if err != nil {
		b.fail.Add(int64(len(bt.reqs)))
		for _, r := range bt.reqs {
			r.finish(nil, err)
		}
		return
	}
	split(out, bt.reqs)
}

// rowsOf checks that a request can be batched and returns its row count.
func rowsOf(inputs []onnxrt.Tensor) (int, error) {
	if len(inputs) == 0 {
		return 0, fmt.Errorf("%w: no input tensors", ErrInvalidInput)
	}
	rows := int64(-1)
	for i := range inputs {
		t := &inputs[i]
		if t.Maps != nil {
			return 0, fmt.Errorf("%w: input %q: Maps are outputs only", ErrInvalidInput, t.Name)
		}
		if t.ElementType() == "" {
			return 0, fmt.Errorf("%w: input %q: set exactly one data slice", ErrInvalidInput, t.Name)
		}
		if len(t.Shape) == 0 {
			return 0, fmt.Errorf("%w: input %q is a scalar; batching needs rows along dimension 0", ErrInvalidInput, t.Name)
		}
		size, ok := elements(t.Shape)
		if !ok || size != t.Len() {
			return 0, fmt.Errorf("%w: input %q: shape %v holds %d elements, data has %d", ErrInvalidInput, t.Name, t.Shape, size, t.Len())
		}
		n := t.Shape[0]
		if n < 1 {
			return 0, fmt.Errorf("%w: input %q has %d rows; a request needs at least 1", ErrInvalidInput, t.Name, n)
		}
		if rows >= 0 && n != rows {
			return 0, fmt.Errorf("%w: input %q has %d rows, input %q has %d", ErrInvalidInput, t.Name, n, inputs[0].Name, rows)
		}
		rows = n
	}
	return int(rows), nil
}

// elements is the number of elements a shape holds; false for a negative
// dimension.
func elements(shape []int64) (int, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		n *= d
	}
	return int(n), true
}

// compatible reports whether two requests can share a batch: the same
// input names in the same order, element types and trailing dimensions.
func compatible(a, b []onnxrt.Tensor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Name != y.Name || len(x.Shape) != len(y.Shape) || x.ElementType() != y.ElementType() {
			return false
		}
		for d := 1; d < len(x.Shape); d++ {
			if x.Shape[d] != y.Shape[d] {
				return false
			}
		}
	}
	return true
}
