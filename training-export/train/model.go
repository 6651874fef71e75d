package train

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Layer is a dense layer y = x·W + B, then ReLU when set: a Gemm node (and
// a Relu) in ONNX.
type Layer struct {
	In, Out int
	// W is row-major In x Out.
	W []float32
	B []float32
	// ReLU applies max(0, ·) to the layer's output.
	ReLU bool
}

// Model is a stack of layers whose last layer's outputs are the logits of
// Classes classes. It takes raw (unstandardised) features.
type Model struct {
	Layers  []Layer
	Classes int
}

// predictShardRows is how many rows one Predict task handles.
const predictShardRows = 256

// Predict returns the softmax probabilities of the n rows of x
// (row-major, n x Layers[0].In), row-major n x Classes. It panics when x
// or the model has the wrong shape.
func (m *Model) Predict(x []float32, n int) []float32 {
	if err := m.validate(); err != nil {
		panic(err)
	}
	in := m.Layers[0].In
	if n < 0 || len(x) != n*in {
		panic(fmt.Sprintf("train: Predict: len(x) = %d, want n*In = %d*%d", len(x), n, in))
	}
	out := make([]float32, n*m.Classes)
	tasks := (n + predictShardRows - 1) / predictShardRows
	workers := min(runtime.GOMAXPROCS(0), tasks)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			acts := m.buffers()
			for t := w; t < tasks; t += workers {
				for r := t * predictShardRows; r < min(t*predictShardRows+predictShardRows, n); r++ {
					m.predictRow(x[r*in:r*in+in], out[r*m.Classes:r*m.Classes+m.Classes], acts)
				}
			}
		})
	}
	wg.Wait()
	return out
}

func (m *Model) validate() error {
	if len(m.Layers) == 0 {
		return fmt.Errorf("train: model has no layers")
	}
	for i, l := range m.Layers {
		if l.In <= 0 || l.Out <= 0 || len(l.W) != l.In*l.Out || len(l.B) != l.Out {
			return fmt.Errorf("train: layer %d: In %d, Out %d, len(W) %d, len(B) %d", i, l.In, l.Out, len(l.W), len(l.B))
		}
		if i > 0 && l.In != m.Layers[i-1].Out {
			return fmt.Errorf("train: layer %d takes %d inputs, layer %d gives %d", i, l.In, i-1, m.Layers[i-1].Out)
		}
	}
	if last := m.Layers[len(m.Layers)-1].Out; last != m.Classes {
		return fmt.Errorf("train: last layer gives %d outputs, model has %d classes", last, m.Classes)
	}
	return nil
}

func (m *Model) buffers() [][]float64 {
	acts := make([][]float64, len(m.Layers)+1)
	acts[0] = make([]float64, m.Layers[0].In)
	for i, l := range m.Layers {
		acts[i+1] = make([]float64, l.Out)
	}
	return acts
}

// predictRow computes one row's probabilities in float64.
func (m *Model) predictRow(x []float32, probs []float32, acts [][]float64) {
	for j, v := range x {
		acts[0][j] = float64(v)
	}
	for i, l := range m.Layers {
		in, out := acts[i], acts[i+1]
		for k, b := range l.B {
			out[k] = float64(b)
		}
		for j, a := range in {
			if a == 0 {
				continue
			}
			row := l.W[j*l.Out : j*l.Out+l.Out]
			out := out[:len(row)]
			for k, w := range row {
				out[k] += a * float64(w)
			}
		}
		if l.ReLU {
			for k, v := range out {
				out[k] = max(v, 0)
			}
		}
	}
	logits := acts[len(acts)-1]
	lse := logSumExp(logits)
	for k, v := range logits {
		probs[k] = float32(math.Exp(v - lse))
	}
}

// Popularity is the baseline that predicts the training labels' class
// frequencies (weighted, add-one smoothed so no class gets 0) for every
// row, as a Model over d's features — zero weights, bias log frequency —
// so it is scored, and exported, like a trained one.
func Popularity(d *Dataset, classes int) (*Model, error) {
	if classes < 2 {
		return nil, fmt.Errorf("train: %w: classes = %d, want >= 2", ErrOptions, classes)
	}
	if err := check("training", d, 0, classes); err != nil {
		return nil, err
	}
	l := Layer{In: d.Features, Out: classes, W: make([]float32, d.Features*classes), B: make([]float32, classes)}
	for k, f := range classFreq(d, classes) {
		l.B[k] = float32(math.Log(f))
	}
	return &Model{Layers: []Layer{l}, Classes: classes}, nil
}
