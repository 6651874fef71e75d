package train

import (
	"math"
	"testing"
)

func TestMetrics(t *testing.T) {
	third := float32(1) / 3
	for _, tc := range []struct {
		name             string
		probs            []float32
		y                int
		hit1, hit2, hit3 float64
		mrr              float64
	}{
		{"first", []float32{0.5, 0.3, 0.2}, 0, 1, 1, 1, 1},
		{"second", []float32{0.5, 0.3, 0.2}, 1, 0, 1, 1, 0.5},
		{"last", []float32{0.5, 0.3, 0.2}, 2, 0, 0, 1, 1.0 / 3},
		{"tied for first", []float32{0.4, 0.4, 0.2}, 1, 0.5, 1, 1, 0.75},
		{"tied for second", []float32{0.6, 0.2, 0.2}, 2, 0, 0.5, 1, (0.5 + 1.0/3) / 2},
		{"all tied", []float32{third, third, third}, 0, 1.0 / 3, 2.0 / 3, 1, (1 + 0.5 + 1.0/3) / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := []int{tc.y}
			for _, c := range []struct {
				metric    string
				got, want float64
			}{
				{"hit@1", HitAtK(tc.probs, y, 3, 1), tc.hit1},
				{"accuracy", Accuracy(tc.probs, y, 3), tc.hit1},
				{"hit@2", HitAtK(tc.probs, y, 3, 2), tc.hit2},
				{"hit@3", HitAtK(tc.probs, y, 3, 3), tc.hit3},
				{"hit@5", HitAtK(tc.probs, y, 3, 5), 1},
				{"mrr", MRR(tc.probs, y, 3), tc.mrr},
				{"log loss", LogLoss(tc.probs, y, 3), -math.Log(float64(tc.probs[tc.y]))},
			} {
				if math.Abs(c.got-c.want) > 1e-12 {
					t.Errorf("%s = %v, want %v", c.metric, c.got, c.want)
				}
			}
		})
	}

	// Over several rows the metrics are means.
	probs := []float32{0.5, 0.3, 0.2, 0.5, 0.3, 0.2, 0.4, 0.4, 0.2}
	y := []int{0, 2, 1}
	if got, want := HitAtK(probs, y, 3, 1), (1+0+0.5)/3.0; math.Abs(got-want) > 1e-12 {
		t.Errorf("hit@1 over rows = %v, want %v", got, want)
	}
	if got, want := MRR(probs, y, 3), (1+1.0/3+0.75)/3; math.Abs(got-want) > 1e-12 {
		t.Errorf("MRR over rows = %v, want %v", got, want)
	}
	if got := LogLoss([]float32{1, 0}, []int{1}, 2); got != -math.Log(logLossFloor) {
		t.Errorf("log loss of probability 0 = %v, want the floor's %v", got, -math.Log(logLossFloor))
	}
	if got := Accuracy(nil, nil, 3); !math.IsNaN(got) {
		t.Errorf("accuracy of no rows = %v, want NaN", got)
	}
}

func TestMetricsPanicOnBadShape(t *testing.T) {
	for name, f := range map[string]func(){
		"short probs":    func() { HitAtK([]float32{0.5, 0.5}, []int{0, 1}, 2, 1) },
		"label too big":  func() { MRR([]float32{0.5, 0.5}, []int{2}, 2) },
		"negative label": func() { LogLoss([]float32{0.5, 0.5}, []int{-1}, 2) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

func TestPopularity(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	for _, tc := range []struct {
		name    string
		weights []float32
		want    []float64
	}{
		// Counts 3, 1, 0 plus one each, over 4 + 3.
		{"unweighted", nil, []float64{4.0 / 7, 2.0 / 7, 1.0 / 7}},
		// Weighted counts 3, 5, 0; the smoothing unit is the mean weight 2.
		{"weighted", []float32{1, 1, 1, 5}, []float64{5.0 / 14, 7.0 / 14, 2.0 / 14}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Popularity(&Dataset{X: x, Y: []int{0, 0, 0, 1}, Weights: tc.weights, Features: 2}, 3)
			if err != nil {
				t.Fatal(err)
			}
			probs := m.Predict([]float32{-100, 100, 1e6, 0}, 2)
			for r := range 2 {
				for k, want := range tc.want {
					if got := float64(probs[r*3+k]); math.Abs(got-want) > 1e-6 {
						t.Errorf("row %d class %d: %v, want %v", r, k, got, want)
					}
				}
			}
		})
	}
}
