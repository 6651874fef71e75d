package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestGradient checks the analytic gradient of the training objective
// (weighted mean cross-entropy plus L2) against central finite
// differences, for every parameter of tiny random nets.
func TestGradient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hidden  []int
		l2      float64
		weights bool
	}{
		{"logistic", nil, 0, false},
		{"logistic l2 weighted", nil, 0.3, true},
		{"mlp one hidden", []int{5}, 0, false},
		{"mlp one hidden l2 weighted", []int{5}, 0.1, true},
		{"mlp two hidden", []int{6, 4}, 0.05, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const rows, features, classes = 7, 3, 4
			rng := rand.New(rand.NewPCG(42, 0))
			d := &Dataset{X: make([]float32, rows*features), Y: make([]int, rows), Features: features}
			for i := range d.X {
				d.X[i] = float32(rng.NormFloat64()*3 + 1)
			}
			for i := range d.Y {
				d.Y[i] = rng.IntN(classes)
			}
			if tc.weights {
				d.Weights = make([]float32, rows)
				for i := range d.Weights {
					d.Weights[i] = float32(rng.Float64() * 2)
				}
				d.Weights[2] = 0
			}
			opt, err := Options{Classes: classes, Hidden: tc.hidden, L2: tc.l2, Workers: 2, BatchSize: 64}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			tr := newTrainer(d, opt)
			p := tr.net.params
			for i := range p {
				p[i] = rng.NormFloat64()
			}
			all := make([]int, rows)
			for i := range all {
				all[i] = i
			}
			loss, _ := tr.gradient(d, all)
			if want := tr.loss(d); math.Abs(loss-want) > 1e-12 {
				t.Fatalf("gradient's loss %v, loss() %v", loss, want)
			}
			analytic := append([]float64(nil), tr.grad...)
			objective := func() float64 { return tr.loss(d) + tr.penalty() }
			const h = 1e-5
			for i := range p {
				orig := p[i]
				p[i] = orig + h
				up := objective()
				p[i] = orig - h
				down := objective()
				p[i] = orig
				numeric := (up - down) / (2 * h)
				if diff := math.Abs(numeric - analytic[i]); diff > 1e-7+1e-5*math.Abs(numeric) {
					t.Errorf("param %d: analytic %.10g, numeric %.10g", i, analytic[i], numeric)
				}
			}
		})
	}
}

// TestLearnsPlantedRule trains on a rule planted in synthetic data and
// scores a held-out set against the popularity baseline.
func TestLearnsPlantedRule(t *testing.T) {
	for _, tc := range []struct {
		name    string
		problem *problem
		opt     Options
		// The model must beat popularity by these margins.
		accGain, hit3Gain float64
	}{
		{"logistic on linear rule", linearProblem(1, 10, 8, 0.3), Options{LearningRate: 0.01}, 0.3, 0.25},
		{"mlp on linear rule", linearProblem(1, 10, 8, 0.3), Options{Hidden: []int{32}, LearningRate: 0.005}, 0.3, 0.25},
		{"mlp on quadrant rule", quadrantProblem(2, 6), Options{Hidden: []int{32, 16}, LearningRate: 0.005}, 0.4, 0.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			train, valid, test := tc.problem.draw(10, 8000), tc.problem.draw(11, 2000), tc.problem.draw(12, 2000)
			opt := tc.opt
			opt.Classes, opt.Epochs, opt.Seed = tc.problem.classes, 30, 7
			m, rep, err := Train(context.Background(), train, valid, opt)
			if err != nil {
				t.Fatal(err)
			}
			pop, err := Popularity(train, opt.Classes)
			if err != nil {
				t.Fatal(err)
			}
			k := opt.Classes
			probs, popProbs := m.Predict(test.X, test.Rows()), pop.Predict(test.X, test.Rows())
			acc, popAcc := Accuracy(probs, test.Y, k), Accuracy(popProbs, test.Y, k)
			hit3, popHit3 := HitAtK(probs, test.Y, k, 3), HitAtK(popProbs, test.Y, k, 3)
			t.Logf("epochs %d (best %d): accuracy %.3f vs popularity %.3f, hit@3 %.3f vs %.3f, MRR %.3f vs %.3f, log loss %.3f vs %.3f",
				len(rep.Epochs), rep.BestEpoch, acc, popAcc, hit3, popHit3,
				MRR(probs, test.Y, k), MRR(popProbs, test.Y, k), LogLoss(probs, test.Y, k), LogLoss(popProbs, test.Y, k))
			if acc < popAcc+tc.accGain {
				t.Errorf("accuracy %.3f, want >= popularity %.3f + %.2f", acc, popAcc, tc.accGain)
			}
			if hit3 < popHit3+tc.hit3Gain {
				t.Errorf("hit@3 %.3f, want >= popularity %.3f + %.2f", hit3, popHit3, tc.hit3Gain)
			}
			if ll, popLL := LogLoss(probs, test.Y, k), LogLoss(popProbs, test.Y, k); ll > popLL/2 {
				t.Errorf("log loss %.3f, want <= half of popularity's %.3f", ll, popLL)
			}
		})
	}
}

// TestQuadrantNeedsHiddenLayer shows the hidden layer earns its keep: on
// a rule with no linear signal logistic regression stays near chance.
func TestQuadrantNeedsHiddenLayer(t *testing.T) {
	p := quadrantProblem(2, 6)
	train, valid, test := p.draw(10, 8000), p.draw(11, 2000), p.draw(12, 2000)
	acc := func(hidden []int) float64 {
		m, _, err := Train(context.Background(), train, valid, Options{Classes: 4, Hidden: hidden, LearningRate: 0.005, Epochs: 30, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		return Accuracy(m.Predict(test.X, test.Rows()), test.Y, 4)
	}
	lr, mlp := acc(nil), acc([]int{32, 16})
	t.Logf("accuracy: logistic %.3f, mlp %.3f", lr, mlp)
	if lr > 0.35 || mlp < lr+0.4 {
		t.Errorf("logistic %.3f (want <= 0.35), mlp %.3f (want >= logistic + 0.4)", lr, mlp)
	}
}

// TestFolding checks that the folded model on raw features predicts what
// the unfolded net predicts on standardised features.
func TestFolding(t *testing.T) {
	for _, tc := range []struct {
		hidden []int
		// offset scales the features' |mean|/std, up to 20 by default.
		offset float64
	}{
		{nil, 1}, {[]int{16}, 1}, {[]int{16, 8}, 1},
		{nil, 0}, {[]int{16, 8}, 0},
		// |mean|/std up to 200. The error grows with it (the folded bias
		// holds sum mean/std * W in float32): at 2000 it is ~3e-5.
		{nil, 10}, {[]int{16, 8}, 10},
	} {
		hidden := tc.hidden
		t.Run(fmt.Sprintf("%s offset x%g", name(hidden), tc.offset), func(t *testing.T) {
			p := linearProblem(3, 12, 6, 0.5).offsetBy(tc.offset)
			train, test := p.draw(20, 3000), p.draw(21, 500)
			tr, rep, err := fit(context.Background(), train, nil, Options{Classes: 6, Hidden: hidden, Epochs: 3, LearningRate: 0.01, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			folded, unfolded := tr.net.model(tr.mean, tr.inv), tr.net.model(nil, nil)
			z := make([]float32, len(test.X))
			for i, v := range test.X {
				j := i % test.Features
				z[i] = float32((float64(v) - tr.mean[j]) * tr.inv[j])
				if rep.Std[j] != float32(1/tr.inv[j]) || rep.Mean[j] != float32(tr.mean[j]) {
					t.Fatalf("report's standardisation of column %d differs from the one folded", j)
				}
			}
			raw, std := folded.Predict(test.X, test.Rows()), unfolded.Predict(z, test.Rows())
			var worst float64
			for i := range raw {
				worst = max(worst, math.Abs(float64(raw[i])-float64(std[i])))
			}
			t.Logf("largest difference %.3g", worst)
			if worst > 1e-5 {
				t.Errorf("folded and unfolded predictions differ by %.3g, want <= 1e-5", worst)
			}
			// And the folding really changed the first layer.
			if reflect.DeepEqual(folded.Layers[0], unfolded.Layers[0]) {
				t.Error("folding left the first layer unchanged")
			}
		})
	}
}

func name(hidden []int) string {
	if len(hidden) == 0 {
		return "logistic"
	}
	return fmt.Sprint("mlp", hidden)
}

// TestDeterminism: the seed decides the weights, the number of workers
// does not.
func TestDeterminism(t *testing.T) {
	p := linearProblem(4, 8, 5, 0.5)
	train, valid := p.draw(30, 1500), p.draw(31, 300)
	run := func(seed uint64, workers int) *Model {
		m, _, err := Train(context.Background(), train, valid, Options{Classes: 5, Hidden: []int{12}, Epochs: 3, BatchSize: 100, Seed: seed, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a := run(1, 1)
	if b := run(1, 1); !reflect.DeepEqual(a, b) {
		t.Error("same seed, different weights")
	}
	if b := run(1, 3); !reflect.DeepEqual(a, b) {
		t.Error("same seed, 1 vs 3 workers: different weights")
	}
	if b := run(2, 1); reflect.DeepEqual(a.Layers[0].W, b.Layers[0].W) {
		t.Error("different seeds, same weights")
	}
}

// TestEarlyStopping validates on labels unrelated to the features, so
// the validation loss soon only grows as the model fits the training set.
func TestEarlyStopping(t *testing.T) {
	p := linearProblem(5, 8, 5, 0.3)
	train, valid, noise := p.draw(40, 3000), p.draw(41, 1000), p.draw(42, 1000)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range noise.Y {
		noise.Y[i] = rng.IntN(5)
	}
	for _, tc := range []struct {
		name      string
		valid     *Dataset
		patience  int
		wantStop  bool
		wantEpoch int // epochs run, 0: not checked
	}{
		{"stops on noise", noise, 2, true, 0},
		{"stops on noise, patience 4", noise, 4, true, 0},
		{"never stops with negative patience", noise, -1, false, 12},
		{"runs on while it improves", valid, 3, false, 12},
		{"no validation set", nil, 3, false, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []Epoch
			m, rep, err := Train(context.Background(), train, tc.valid, Options{
				Classes: 5, Epochs: 12, LearningRate: 0.003, Patience: tc.patience, Seed: 1,
				OnEpoch: func(e Epoch) { seen = append(seen, e) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(seen, rep.Epochs) && tc.valid != nil {
				t.Errorf("OnEpoch saw %v, report has %v", seen, rep.Epochs)
			}
			t.Logf("ran %d epochs, best %d, stopped %v", len(rep.Epochs), rep.BestEpoch, rep.EarlyStopped)
			if rep.EarlyStopped != tc.wantStop {
				t.Fatalf("EarlyStopped = %v, want %v; epochs %+v", rep.EarlyStopped, tc.wantStop, rep.Epochs)
			}
			if tc.wantEpoch > 0 && len(rep.Epochs) != tc.wantEpoch {
				t.Errorf("ran %d epochs, want %d", len(rep.Epochs), tc.wantEpoch)
			}
			if tc.valid == nil {
				if rep.BestEpoch != len(rep.Epochs) {
					t.Errorf("BestEpoch %d without a validation set, want the last (%d)", rep.BestEpoch, len(rep.Epochs))
				}
				return
			}
			best := rep.Epochs[rep.BestEpoch-1].ValidLoss
			for _, e := range rep.Epochs {
				if e.ValidLoss < best {
					t.Errorf("epoch %d has validation loss %.5f, below the best epoch %d's %.5f", e.Epoch, e.ValidLoss, rep.BestEpoch, best)
				}
			}
			if tc.wantStop && len(rep.Epochs) != rep.BestEpoch+tc.patience {
				t.Errorf("stopped after %d epochs, want best %d + patience %d", len(rep.Epochs), rep.BestEpoch, tc.patience)
			}
			// The model has the best epoch's weights.
			if got := LogLoss(m.Predict(tc.valid.X, tc.valid.Rows()), tc.valid.Y, 5); math.Abs(got-best) > 1e-4 {
				t.Errorf("model's validation loss %.6f, best epoch's %.6f", got, best)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	good := func() *Dataset {
		return &Dataset{X: []float32{1, 2, 3, 4, 5, 6}, Y: []int{0, 1, 2}, Features: 2}
	}
	with := func(f func(d *Dataset)) *Dataset { d := good(); f(d); return d }
	opt := Options{Classes: 3, Epochs: 1}
	for _, tc := range []struct {
		name         string
		train, valid *Dataset
		opt          Options
		kind         error
		set          string
		row, col     int
	}{
		{"nil training set", nil, nil, opt, ErrEmpty, "training", -1, -1},
		{"no rows", &Dataset{Features: 2}, nil, opt, ErrEmpty, "training", -1, -1},
		{"empty validation set", good(), &Dataset{Features: 2}, opt, ErrEmpty, "validation", -1, -1},
		{"no features", &Dataset{Y: []int{0}}, nil, opt, ErrShape, "training", -1, -1},
		{"short X", with(func(d *Dataset) { d.X = d.X[:5] }), nil, opt, ErrShape, "training", -1, -1},
		{"weights per row", with(func(d *Dataset) { d.Weights = []float32{1} }), nil, opt, ErrShape, "training", -1, -1},
		{"validation features", good(), &Dataset{X: []float32{1, 2, 3}, Y: []int{0}, Features: 3}, opt, ErrShape, "validation", -1, -1},
		{"NaN", with(func(d *Dataset) { d.X[3] = float32(math.NaN()) }), nil, opt, ErrNotFinite, "training", 1, 1},
		{"+Inf in validation", good(), with(func(d *Dataset) { d.X[4] = float32(math.Inf(1)) }), opt, ErrNotFinite, "validation", 2, 0},
		{"-Inf", with(func(d *Dataset) { d.X[0] = float32(math.Inf(-1)) }), nil, opt, ErrNotFinite, "training", 0, 0},
		{"negative label", with(func(d *Dataset) { d.Y[1] = -1 }), nil, opt, ErrLabel, "training", 1, -1},
		{"label = classes", good(), with(func(d *Dataset) { d.Y[2] = 3 }), opt, ErrLabel, "validation", 2, -1},
		{"negative weight", with(func(d *Dataset) { d.Weights = []float32{1, -1, 1} }), nil, opt, ErrWeight, "training", 1, -1},
		{"NaN weight", with(func(d *Dataset) { d.Weights = []float32{1, 1, float32(math.NaN())} }), nil, opt, ErrWeight, "training", 2, -1},
		{"zero weights", with(func(d *Dataset) { d.Weights = []float32{0, 0, 0} }), nil, opt, ErrWeight, "training", -1, -1},
		{"one class", good(), nil, Options{Classes: 1}, ErrOptions, "", 0, 0},
		{"three hidden layers", good(), nil, Options{Classes: 3, Hidden: []int{4, 4, 4}}, ErrOptions, "", 0, 0},
		{"empty hidden layer", good(), nil, Options{Classes: 3, Hidden: []int{4, 0}}, ErrOptions, "", 0, 0},
		{"negative learning rate", good(), nil, Options{Classes: 3, LearningRate: -1}, ErrOptions, "", 0, 0},
		{"NaN L2", good(), nil, Options{Classes: 3, L2: math.NaN()}, ErrOptions, "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, err := Train(context.Background(), tc.train, tc.valid, tc.opt)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			if m != nil {
				t.Error("a model despite the error")
			}
			if tc.kind == ErrOptions {
				return
			}
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("err = %T, want *DataError", err)
			}
			if de.Set != tc.set || de.Row != tc.row || de.Col != tc.col {
				t.Errorf("error at %s row %d col %d, want %s row %d col %d (%v)", de.Set, de.Row, de.Col, tc.set, tc.row, tc.col, err)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	p := linearProblem(6, 4, 3, 0.1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Train(ctx, p.draw(1, 100), nil, Options{Classes: 3}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPredictShape(t *testing.T) {
	m, err := Popularity(&Dataset{X: []float32{1, 2}, Y: []int{1, 0}, Features: 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Predict with len(x) != n*In did not panic")
		}
	}()
	m.Predict([]float32{1, 2, 3}, 2)
}

// penalty is the L2 term of the loss.
func (t *trainer) penalty() float64 {
	var sum float64
	for l := range t.net.layers() {
		for _, v := range t.net.w(t.net.params, l) {
			sum += v * v
		}
	}
	return t.opt.L2 / 2 * sum
}
