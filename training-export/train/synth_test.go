package train

import (
	"math"
	"math/rand/v2"
)

// problem is a synthetic classification problem: latent features z are
// standard normal, the class is rule(z), and the observed features are
// x = z*scale + offset, so training has to standardise.
type problem struct {
	features, classes int
	rule              func(z []float64) int
	scale, offset     []float64
}

// linearProblem plants class = argmax(z·A + c + noise): a random linear
// map with class biases c, so the classes are unbalanced and popularity is
// a real baseline.
func linearProblem(seed uint64, features, classes int, noise float64) *problem {
	rng := rand.New(rand.NewPCG(seed, 1))
	a := make([]float64, features*classes)
	for i := range a {
		a[i] = rng.NormFloat64()
	}
	c := make([]float64, classes)
	for k := range c {
		c[k] = 1.5 * rng.NormFloat64()
	}
	noiseRNG := rand.New(rand.NewPCG(seed, 2))
	p := &problem{features: features, classes: classes}
	p.rule = func(z []float64) int {
		best, bestV := 0, math.Inf(-1)
		for k := range classes {
			v := c[k] + noise*noiseRNG.NormFloat64()
			for j, zj := range z {
				v += zj * a[j*classes+k]
			}
			if v > bestV {
				best, bestV = k, v
			}
		}
		return best
	}
	p.scaleFeatures(rng)
	return p
}

// quadrantProblem plants class = 2*[z0*z1 > 0] + [z2*z3 > 0]: no linear
// signal at all, so only a hidden layer can learn it.
func quadrantProblem(seed uint64, features int) *problem {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := &problem{features: features, classes: 4}
	p.rule = func(z []float64) int {
		c := 0
		if z[0]*z[1] > 0 {
			c += 2
		}
		if z[2]*z[3] > 0 {
			c++
		}
		return c
	}
	p.scaleFeatures(rng)
	return p
}

// scaleFeatures gives the observed features scales from 0.01 to 100 and
// offsets up to ±20 of their scale: |mean|/std up to 20.
func (p *problem) scaleFeatures(rng *rand.Rand) {
	p.scale = make([]float64, p.features)
	p.offset = make([]float64, p.features)
	for j := range p.features {
		p.scale[j] = math.Pow(10, 4*rng.Float64()-2)
		p.offset[j] = p.scale[j] * 20 * (2*rng.Float64() - 1)
	}
}

// offsetBy multiplies the offsets by f.
func (p *problem) offsetBy(f float64) *problem {
	for j := range p.offset {
		p.offset[j] *= f
	}
	return p
}

// draw samples n rows.
func (p *problem) draw(seed uint64, n int) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 3))
	d := &Dataset{X: make([]float32, n*p.features), Y: make([]int, n), Features: p.features}
	z := make([]float64, p.features)
	for i := range n {
		for j := range z {
			z[j] = rng.NormFloat64()
			d.X[i*p.features+j] = float32(z[j]*p.scale[j] + p.offset[j])
		}
		d.Y[i] = p.rule(z)
	}
	return d
}
