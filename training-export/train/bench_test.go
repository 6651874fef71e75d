package train

import (
	"context"
	"sync"
	"testing"
)

// The benchmark problem: 50k training rows, 10k validation rows, 40
// features, 50 classes.
var benchData = sync.OnceValues(func() (*Dataset, *Dataset) {
	p := linearProblem(100, 40, 50, 1)
	return p.draw(101, 50_000), p.draw(102, 10_000)
})

// BenchmarkTrain times one 10-epoch training run (no early stopping) per
// op. Its floor is BenchmarkPredict: one forward pass over the same rows
// with the same layer sizes.
func BenchmarkTrain(b *testing.B) {
	train, valid := benchData()
	for _, tc := range []struct {
		name   string
		hidden []int
	}{
		{"logistic", nil},
		{"mlp64", []int{64}},
		{"mlp128x64", []int{128, 64}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			opt := Options{Classes: 50, Hidden: tc.hidden, Epochs: 10, Patience: -1, LearningRate: 3e-3}
			var rep *Report
			for b.Loop() {
				var err error
				if _, rep, err = Train(context.Background(), train, valid, opt); err != nil {
					b.Fatal(err)
				}
			}
			last := rep.Epochs[len(rep.Epochs)-1]
			b.ReportMetric(last.ValidLoss, "valid-loss")
			b.ReportMetric(float64(train.Rows()*len(rep.Epochs))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func BenchmarkPredict(b *testing.B) {
	train, _ := benchData()
	for _, tc := range []struct {
		name   string
		hidden []int
	}{
		{"logistic", nil},
		{"mlp64", []int{64}},
		{"mlp128x64", []int{128, 64}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, _, err := Train(context.Background(), &Dataset{X: train.X[:40*500], Y: train.Y[:500], Features: 40}, nil,
				Options{Classes: 50, Hidden: tc.hidden, Epochs: 1})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				m.Predict(train.X, train.Rows())
			}
			b.ReportMetric(float64(train.Rows())*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
