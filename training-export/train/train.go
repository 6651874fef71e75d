// Package train fits baseline multi-class classifiers — multinomial
// logistic regression and ReLU MLPs with one or two hidden layers — for
// tailor's next-product, timing and channel models, and scores them.
//
// Training minimises the (row-weighted) softmax cross-entropy plus an L2
// penalty with mini-batch Adam, on features standardised with the training
// set's mean and std, and stops early on a validation set the caller holds
// out. The returned Model has the standardisation folded into its first
// layer: it takes raw features, as a stack of Gemm layers would. Folding
// costs precision in proportion to a feature's |mean|/std, because the
// first layer's float32 bias holds sum_j mean_j/std_j * W_j: up to a few
// hundred, probabilities move by less than 1e-5; center features such as
// raw timestamps before training.
//
// Training is deterministic for a given Options.Seed, whatever the number
// of workers: each mini-batch is cut into fixed shards whose gradients are
// summed in shard order.
package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// Options configures Train. Zero values take the documented defaults.
type Options struct {
	// Classes is the number of classes K (required, >= 2); labels are in
	// [0, K).
	Classes int
	// Hidden lists the hidden ReLU layer sizes: none for multinomial
	// logistic regression, at most two.
	Hidden []int
	// Epochs is the most passes over the training set (default 20).
	Epochs int
	// BatchSize is the mini-batch size in rows (default 256).
	BatchSize int
	// LearningRate is Adam's step size (default 1e-3).
	LearningRate float64
	// L2 adds L2/2 * ||W||² over the weights (not the biases), measured on
	// standardised features, to the loss (default 0).
	L2 float64
	// Patience is how many epochs without a validation-loss improvement
	// training runs before it stops (default 3); negative never stops
	// early. Without a validation set training runs all Epochs.
	Patience int
	// MinDelta is how much the validation loss must drop to count as an
	// improvement (default 0: any drop).
	MinDelta float64
	// Seed seeds the initial weights and the shuffling.
	Seed uint64
	// Workers computes each mini-batch's gradient on this many goroutines
	// (default GOMAXPROCS). It does not change the result.
	Workers int
	// OnEpoch, when set, is called after each epoch.
	OnEpoch func(Epoch)
}

// Epoch is one epoch's losses.
type Epoch struct {
	// Epoch counts from 1.
	Epoch int
	// TrainLoss is the weighted mean cross-entropy (without the L2 term)
	// over the epoch's mini-batches, each measured just before its step.
	TrainLoss float64
	// ValidLoss is the weighted mean cross-entropy on the validation set
	// after the epoch; NaN without a validation set.
	ValidLoss float64
}

// Report describes a training run.
type Report struct {
	Epochs []Epoch
	// BestEpoch is the epoch whose weights the model has: the lowest
	// validation loss, or the last epoch without a validation set.
	BestEpoch int
	// EarlyStopped is set when training stopped before Options.Epochs.
	EarlyStopped bool
	// Mean and Std are the training set's per-feature standardisation,
	// folded into the model's first layer (Std is 1 for constant columns).
	Mean, Std []float32
}

const (
	defaultEpochs    = 20
	defaultBatchSize = 256
	defaultLR        = 1e-3
	defaultPatience  = 3

	// shardRows is how many rows of a mini-batch one task handles; fixed
	// so that the gradient's summation order does not depend on Workers.
	shardRows = 32
	// evalShardRows is the same for forward-only passes.
	evalShardRows = 512

	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
)

func (o Options) withDefaults() (Options, error) {
	bad := func(format string, args ...any) (Options, error) {
		return o, fmt.Errorf("train: %w: %s", ErrOptions, fmt.Sprintf(format, args...))
	}
	if o.Classes < 2 {
		return bad("Classes = %d, want >= 2", o.Classes)
	}
	if len(o.Hidden) > 2 {
		return bad("%d hidden layers, at most 2", len(o.Hidden))
	}
	for i, h := range o.Hidden {
		if h <= 0 {
			return bad("hidden layer %d has size %d, want > 0", i+1, h)
		}
	}
	if o.Epochs < 0 || o.BatchSize < 0 || o.Workers < 0 {
		return bad("Epochs, BatchSize and Workers must not be negative")
	}
	if o.LearningRate < 0 || math.IsNaN(o.LearningRate) || math.IsInf(o.LearningRate, 0) {
		return bad("LearningRate = %v", o.LearningRate)
	}
	if o.L2 < 0 || math.IsNaN(o.L2) || math.IsInf(o.L2, 0) {
		return bad("L2 = %v", o.L2)
	}
	if o.MinDelta < 0 || math.IsNaN(o.MinDelta) || math.IsInf(o.MinDelta, 0) {
		return bad("MinDelta = %v", o.MinDelta)
	}
	if o.Epochs == 0 {
		o.Epochs = defaultEpochs
	}
	if o.BatchSize == 0 {
		o.BatchSize = defaultBatchSize
	}
	if o.LearningRate == 0 {
		o.LearningRate = defaultLR
	}
	if o.Patience == 0 {
		o.Patience = defaultPatience
	}
	if o.Workers == 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	return o, nil
}

// Train fits a classifier on train, stopping early on valid (nil: no early
// stopping). The model takes raw features. Bad data is a *DataError, bad
// options wrap ErrOptions; a cancelled ctx stops training with ctx.Err().
func Train(ctx context.Context, train, valid *Dataset, opt Options) (*Model, *Report, error) {
	t, rep, err := fit(ctx, train, valid, opt)
	if err != nil {
		return nil, nil, err
	}
	return t.net.model(t.mean, t.inv), rep, nil
}

// trainer holds a run's state.
type trainer struct {
	opt            Options
	net            *net
	mean, std, inv []float64 // of the training set's columns

	scratch   []*scratch  // per worker
	shardGrad [][]float64 // per shard of a mini-batch
	shardLoss []float64
	shardW    []float64
	grad      []float64
}

func newTrainer(train *Dataset, opt Options) *trainer {
	sizes := append(append([]int{train.Features}, opt.Hidden...), opt.Classes)
	t := &trainer{opt: opt, net: newNet(sizes)}
	t.mean, t.std, t.inv = standardisation(train)
	shards := (opt.BatchSize + shardRows - 1) / shardRows
	for range opt.Workers {
		t.scratch = append(t.scratch, t.net.newScratch())
	}
	t.shardGrad = make([][]float64, shards)
	for i := range t.shardGrad {
		t.shardGrad[i] = make([]float64, len(t.net.params))
	}
	t.shardLoss = make([]float64, shards)
	t.shardW = make([]float64, shards)
	t.grad = make([]float64, len(t.net.params))
	return t
}

func fit(ctx context.Context, train, valid *Dataset, opt Options) (*trainer, *Report, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	if err := check("training", train, 0, opt.Classes); err != nil {
		return nil, nil, err
	}
	if valid != nil {
		if err := check("validation", valid, train.Features, opt.Classes); err != nil {
			return nil, nil, err
		}
	}
	t := newTrainer(train, opt)
	rep := &Report{Mean: make([]float32, len(t.mean)), Std: make([]float32, len(t.inv))}
	for j := range t.mean {
		rep.Mean[j], rep.Std[j] = float32(t.mean[j]), float32(t.std[j])
	}

	rng := rand.New(rand.NewPCG(opt.Seed, 0x7461696c6f72)) // "tailor"
	t.net.init(rng, logPrior(train, opt.Classes))

	n := train.Rows()
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	p := t.net.params
	m1, m2 := make([]float64, len(p)), make([]float64, len(p))
	var step int
	best, bestLoss, bad := make([]float64, len(p)), math.Inf(1), 0

	for epoch := 1; epoch <= opt.Epochs; epoch++ {
		rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var lossSum, wSum float64
		for start := 0; start < n; start += opt.BatchSize {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			loss, w := t.gradient(train, perm[start:min(start+opt.BatchSize, n)])
			if w == 0 {
				continue
			}
			lossSum, wSum = lossSum+loss*w, wSum+w
			step++
			adam(p, t.grad, m1, m2, step, opt.LearningRate)
		}
		e := Epoch{Epoch: epoch, TrainLoss: lossSum / wSum, ValidLoss: math.NaN()}
		if valid != nil {
			e.ValidLoss = t.loss(valid)
		}
		rep.Epochs = append(rep.Epochs, e)
		if opt.OnEpoch != nil {
			opt.OnEpoch(e)
		}
		if valid == nil {
			rep.BestEpoch = epoch
			continue
		}
		if e.ValidLoss < bestLoss-opt.MinDelta || rep.BestEpoch == 0 {
			bestLoss, rep.BestEpoch, bad = e.ValidLoss, epoch, 0
			copy(best, p)
			continue
		}
		bad++
		if opt.Patience > 0 && bad >= opt.Patience && epoch < opt.Epochs {
			rep.EarlyStopped = true
			break
		}
	}
	if valid != nil {
		copy(p, best)
	}
	return t, rep, nil
}

// logPrior is the log of the training set's smoothed class frequencies.
func logPrior(d *Dataset, classes int) []float64 {
	f := classFreq(d, classes)
	for k, v := range f {
		f[k] = math.Log(v)
	}
	return f
}

// classFreq is the weighted class frequency with add-one smoothing (in
// units of the mean row weight), so no class has probability 0.
func classFreq(d *Dataset, classes int) []float64 {
	f := make([]float64, classes)
	var total float64
	for i, y := range d.Y {
		w := d.weight(i)
		f[y] += w
		total += w
	}
	unit := total / float64(d.Rows())
	for k := range f {
		f[k] = (f[k] + unit) / (total + unit*float64(classes))
	}
	return f
}

// gradient leaves in t.grad the gradient of the rows' weighted mean
// cross-entropy plus the L2 term, and returns that mean cross-entropy
// (without L2) and the rows' total weight.
func (t *trainer) gradient(d *Dataset, rows []int) (loss, weight float64) {
	n := t.net
	shards := (len(rows) + shardRows - 1) / shardRows
	t.parallel(shards, func(worker, shard int) {
		g, s := t.shardGrad[shard], t.scratch[worker]
		clear(g)
		var lossSum, wSum float64
		for _, r := range rows[shard*shardRows : min(shard*shardRows+shardRows, len(rows))] {
			w := d.weight(r)
			if w == 0 {
				continue
			}
			t.standardise(d, r, s.act[0])
			n.forward(n.params, s)
			lossSum += w * n.lossGrad(s, d.Y[r], w)
			wSum += w
			n.backward(n.params, g, s)
		}
		t.shardLoss[shard], t.shardW[shard] = lossSum, wSum
	})
	copy(t.grad, t.shardGrad[0])
	loss, weight = t.shardLoss[0], t.shardW[0]
	for s := 1; s < shards; s++ {
		for i, v := range t.shardGrad[s] {
			t.grad[i] += v
		}
		loss += t.shardLoss[s]
		weight += t.shardW[s]
	}
	if weight == 0 {
		return 0, 0
	}
	inv := 1 / weight
	for i := range t.grad {
		t.grad[i] *= inv
	}
	if l2 := t.opt.L2; l2 > 0 {
		for l := range n.layers() {
			g := n.w(t.grad, l)
			for i, v := range n.w(n.params, l) {
				g[i] += l2 * v
			}
		}
	}
	return loss * inv, weight
}

// loss is d's weighted mean cross-entropy under the current parameters.
func (t *trainer) loss(d *Dataset) float64 {
	n := t.net
	rows := d.Rows()
	shards := (rows + evalShardRows - 1) / evalShardRows
	if shards > len(t.shardLoss) {
		t.shardLoss = make([]float64, shards)
		t.shardW = make([]float64, shards)
	}
	t.parallel(shards, func(worker, shard int) {
		s := t.scratch[worker]
		var lossSum, wSum float64
		for r := shard * evalShardRows; r < min(shard*evalShardRows+evalShardRows, rows); r++ {
			w := d.weight(r)
			if w == 0 {
				continue
			}
			t.standardise(d, r, s.act[0])
			n.forward(n.params, s)
			logits := s.act[len(s.act)-1]
			lossSum += w * (logSumExp(logits) - logits[d.Y[r]])
			wSum += w
		}
		t.shardLoss[shard], t.shardW[shard] = lossSum, wSum
	})
	var loss, weight float64
	for s := range shards {
		loss += t.shardLoss[s]
		weight += t.shardW[s]
	}
	return loss / weight
}

func (t *trainer) standardise(d *Dataset, r int, z []float64) {
	f := d.Features
	x := d.X[r*f : r*f+f]
	mean, inv := t.mean[:len(x)], t.inv[:len(x)]
	z = z[:len(x)]
	for j, v := range x {
		z[j] = (float64(v) - mean[j]) * inv[j]
	}
}

// parallel runs task(worker, i) for i in [0, tasks) on up to Workers
// goroutines; worker identifies the goroutine's scratch.
func (t *trainer) parallel(tasks int, task func(worker, i int)) {
	workers := min(t.opt.Workers, tasks)
	if workers <= 1 {
		for i := range tasks {
			task(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= tasks {
					return
				}
				task(w, i)
			}
		})
	}
	wg.Wait()
}

// adam takes one Adam step on p with gradient g and moments m1, m2.
func adam(p, g, m1, m2 []float64, step int, lr float64) {
	c1 := 1 - math.Pow(adamBeta1, float64(step))
	c2 := 1 - math.Pow(adamBeta2, float64(step))
	a := lr * math.Sqrt(c2) / c1
	g, m1, m2 = g[:len(p)], m1[:len(p)], m2[:len(p)]
	for i, gi := range g {
		m1[i] = adamBeta1*m1[i] + (1-adamBeta1)*gi
		m2[i] = adamBeta2*m2[i] + (1-adamBeta2)*gi*gi
		p[i] -= a * m1[i] / (math.Sqrt(m2[i]) + adamEps)
	}
}
