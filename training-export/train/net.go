package train

import (
	"math"
	"math/rand/v2"
)

// net is a stack of dense layers over standardised features, ReLU after
// every layer but the last, trained in float64. All parameters live in one
// flat slice so that gradients and Adam moments share its layout.
type net struct {
	sizes      []int // features, hidden..., classes
	params     []float64
	wOff, bOff []int
}

func newNet(sizes []int) *net {
	n := &net{sizes: sizes}
	off := 0
	for l := range len(sizes) - 1 {
		n.wOff = append(n.wOff, off)
		off += sizes[l] * sizes[l+1]
		n.bOff = append(n.bOff, off)
		off += sizes[l+1]
	}
	n.params = make([]float64, off)
	return n
}

func (n *net) layers() int { return len(n.sizes) - 1 }

// w is layer l's weights (row-major in x out) within p, a slice with the
// layout of n.params.
func (n *net) w(p []float64, l int) []float64 {
	return p[n.wOff[l] : n.wOff[l]+n.sizes[l]*n.sizes[l+1]]
}

// b is layer l's bias within p.
func (n *net) b(p []float64, l int) []float64 {
	return p[n.bOff[l] : n.bOff[l]+n.sizes[l+1]]
}

// init draws He-normal weights for the hidden layers and Glorot-uniform
// weights for the output layer, and starts the output bias at logPrior so
// the untrained net predicts the class frequencies.
func (n *net) init(rng *rand.Rand, logPrior []float64) {
	last := n.layers() - 1
	for l := range n.layers() {
		in, out := n.sizes[l], n.sizes[l+1]
		w := n.w(n.params, l)
		if l < last {
			s := math.Sqrt(2 / float64(in))
			for i := range w {
				w[i] = rng.NormFloat64() * s
			}
			clear(n.b(n.params, l))
			continue
		}
		a := math.Sqrt(6 / float64(in+out))
		for i := range w {
			w[i] = (2*rng.Float64() - 1) * a
		}
		copy(n.b(n.params, l), logPrior)
	}
}

// scratch is one worker's per-row buffers.
type scratch struct {
	act   [][]float64 // act[0]: the standardised row; act[l+1]: layer l's output
	delta [2][]float64
}

func (n *net) newScratch() *scratch {
	s := &scratch{}
	widest := 0
	for _, w := range n.sizes {
		s.act = append(s.act, make([]float64, w))
		widest = max(widest, w)
	}
	s.delta[0] = make([]float64, widest)
	s.delta[1] = make([]float64, widest)
	return s
}

// forward runs s.act[0] through the net with parameters p, leaving the
// logits in the last act.
func (n *net) forward(p []float64, s *scratch) {
	last := n.layers() - 1
	for l := range n.layers() {
		in, out := s.act[l], s.act[l+1]
		w := n.w(p, l)
		o := len(out)
		copy(out, n.b(p, l))
		for j, a := range in {
			if a == 0 {
				continue
			}
			row := w[j*o : j*o+o]
			out := out[:len(row)]
			for k, v := range row {
				out[k] += a * v
			}
		}
		if l < last {
			for k, v := range out {
				if v < 0 {
					out[k] = 0
				}
			}
		}
	}
}

// lossGrad turns the logits into the row's cross-entropy for class y and
// leaves wt * d(loss)/d(logits) in s.delta[0].
func (n *net) lossGrad(s *scratch, y int, wt float64) float64 {
	logits := s.act[len(s.act)-1]
	d := s.delta[0][:len(logits)]
	m := math.Inf(-1)
	for _, v := range logits {
		m = max(m, v)
	}
	var sum float64
	for k, v := range logits {
		d[k] = math.Exp(v - m)
		sum += d[k]
	}
	scale := wt / sum
	for k := range d {
		d[k] *= scale
	}
	d[y] -= wt
	return m + math.Log(sum) - logits[y]
}

func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	var sum float64
	for _, x := range v {
		sum += math.Exp(x - m)
	}
	return m + math.Log(sum)
}

// backward adds the gradient of the row whose output gradient is in
// s.delta[0] (after forward and lossGrad) to g.
func (n *net) backward(p, g []float64, s *scratch) {
	cur := 0
	for l := n.layers() - 1; l >= 0; l-- {
		in := s.act[l]
		o := n.sizes[l+1]
		dOut := s.delta[cur][:o]
		gb := n.b(g, l)[:o]
		for k, v := range dOut {
			gb[k] += v
		}
		gw, w := n.w(g, l), n.w(p, l)
		if l == 0 {
			for j, a := range in {
				if a == 0 {
					continue
				}
				grow := gw[j*o : j*o+o]
				grow = grow[:len(dOut)]
				for k, v := range dOut {
					grow[k] += a * v
				}
			}
			return
		}
		// in is a ReLU output: where it is 0 the unit was off and passes
		// no gradient back.
		dIn := s.delta[1-cur][:len(in)]
		for j, a := range in {
			if a == 0 {
				dIn[j] = 0
				continue
			}
			grow, wrow := gw[j*o:j*o+o], w[j*o:j*o+o]
			grow, wrow = grow[:len(dOut)], wrow[:len(dOut)]
			var sum float64
			for k, v := range dOut {
				grow[k] += a * v
				sum += wrow[k] * v
			}
			dIn[j] = sum
		}
		cur = 1 - cur
	}
}

// model converts the net to float32 layers. With mean and inv (1/std)
// set, the standardisation z = (x - mean) * inv is folded into the first
// layer so the model takes raw features:
//
//	W'[j,k] = W[j,k] * inv[j],  b'[k] = b[k] - sum_j mean[j] * inv[j] * W[j,k].
func (n *net) model(mean, inv []float64) *Model {
	m := &Model{Classes: n.sizes[len(n.sizes)-1]}
	for l := range n.layers() {
		in, out := n.sizes[l], n.sizes[l+1]
		w, b := n.w(n.params, l), n.b(n.params, l)
		layer := Layer{In: in, Out: out, W: make([]float32, in*out), B: make([]float32, out), ReLU: l < n.layers()-1}
		if l == 0 && mean != nil {
			// The bias is computed from the rounded weights, so that at
			// x = mean the two cancel exactly but for the bias's own
			// rounding.
			bias := append([]float64(nil), b...)
			for j := range in {
				for k := range out {
					v := float32(w[j*out+k] * inv[j])
					layer.W[j*out+k] = v
					bias[k] -= mean[j] * float64(v)
				}
			}
			for k, v := range bias {
				layer.B[k] = float32(v)
			}
		} else {
			for i, v := range w {
				layer.W[i] = float32(v)
			}
			for i, v := range b {
				layer.B[i] = float32(v)
			}
		}
		m.Layers = append(m.Layers, layer)
	}
	return m
}
