package predlog_test

import (
	"math"
	"slices"
	"testing"

	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/predlog"
)

// sampleInputs has a tensor of each element type.
func sampleInputs() []assemble.Tensor {
	return []assemble.Tensor{
		{Name: "dense", Shape: []int64{2, 3}, Float32: []float32{0.5, -1.25, 3, 0, 7, math.MaxFloat32}},
		{Name: "wide", Shape: []int64{1, 2}, Float64: []float64{math.Pi, -1e-300}},
		{Name: "ids", Shape: []int64{2, 1}, Int64: []int64{1 << 40, -5}},
		{Name: "hour", Shape: []int64{2, 1}, Int32: []int32{23, 0}},
	}
}

func clone(ts []assemble.Tensor) []assemble.Tensor {
	out := make([]assemble.Tensor, len(ts))
	for i, t := range ts {
		out[i] = assemble.Tensor{
			Name: t.Name, Shape: slices.Clone(t.Shape),
			Float32: slices.Clone(t.Float32), Float64: slices.Clone(t.Float64),
			Int64: slices.Clone(t.Int64), Int32: slices.Clone(t.Int32),
		}
	}
	return out
}

func TestDigestIsDeterministic(t *testing.T) {
	a := predlog.Digest(sampleInputs())
	if b := predlog.Digest(clone(sampleInputs())); a != b {
		t.Fatalf("equal inputs digest differently: %s, %s", a, b)
	}
	// Pinned, and computed independently of this package by hashing the
	// documented encoding in Python (struct.pack little-endian, LEB128
	// lengths). A change here breaks comparisons with logged digests and
	// needs a new digest version.
	const want = "ca7339957dd7ba804f66aed928ab3b75c3cafe4759e0b64cd20647c13c92ef79"
	if a != want {
		t.Errorf("Digest(sampleInputs) = %s, want %s", a, want)
	}
	if len(a) != 64 {
		t.Errorf("digest %q is not 64 hex digits", a)
	}
	// A large tensor crosses the internal buffer many times.
	big := []assemble.Tensor{{Name: "x", Shape: []int64{1000, 100}, Float32: make([]float32, 100_000)}}
	for i := range big[0].Float32 {
		big[0].Float32[i] = float32(i) / 7
	}
	if predlog.Digest(big) != predlog.Digest(clone(big)) {
		t.Error("a large input digests differently twice")
	}
}

func TestDigestSeesEveryValueShapeAndName(t *testing.T) {
	base := predlog.Digest(sampleInputs())
	seen := map[string]string{base: "base"}
	check := func(what string, mutate func(ts []assemble.Tensor) []assemble.Tensor) {
		t.Helper()
		d := predlog.Digest(mutate(clone(sampleInputs())))
		if prev, ok := seen[d]; ok {
			t.Errorf("%s: digest equals that of %s", what, prev)
		}
		seen[d] = what
	}
	// Every single value.
	in := sampleInputs()
	for ti := range in {
		for i := range in[ti].Float32 {
			check("float32 value", func(ts []assemble.Tensor) []assemble.Tensor {
				ts[ti].Float32[i] = math.Nextafter32(ts[ti].Float32[i], 1)
				return ts
			})
		}
		for i := range in[ti].Float64 {
			check("float64 value", func(ts []assemble.Tensor) []assemble.Tensor {
				ts[ti].Float64[i] = math.Nextafter(ts[ti].Float64[i], 1)
				return ts
			})
		}
		for i := range in[ti].Int64 {
			check("int64 value", func(ts []assemble.Tensor) []assemble.Tensor { ts[ti].Int64[i]++; return ts })
		}
		for i := range in[ti].Int32 {
			check("int32 value", func(ts []assemble.Tensor) []assemble.Tensor { ts[ti].Int32[i]--; return ts })
		}
		for i := range in[ti].Shape {
			check("shape dim", func(ts []assemble.Tensor) []assemble.Tensor { ts[ti].Shape[i]++; return ts })
		}
		check("name", func(ts []assemble.Tensor) []assemble.Tensor { ts[ti].Name += "_"; return ts })
		check("dropped tensor", func(ts []assemble.Tensor) []assemble.Tensor { return slices.Delete(ts, ti, ti+1) })
	}
	check("-0 for 0", func(ts []assemble.Tensor) []assemble.Tensor {
		ts[0].Float32[3] = float32(math.Copysign(0, -1))
		return ts
	})
	check("tensor order", func(ts []assemble.Tensor) []assemble.Tensor { ts[0], ts[1] = ts[1], ts[0]; return ts })
	check("shape transposed", func(ts []assemble.Tensor) []assemble.Tensor { ts[0].Shape = []int64{3, 2}; return ts })
	check("shape rank", func(ts []assemble.Tensor) []assemble.Tensor { ts[0].Shape = []int64{6}; return ts })
	check("value moved to the next tensor", func(ts []assemble.Tensor) []assemble.Tensor {
		ts[2].Int64, ts[3].Int64 = ts[2].Int64[:1], append([]int64{ts[2].Int64[1]}, ts[3].Int64...)
		return ts
	})
	check("name boundary", func(ts []assemble.Tensor) []assemble.Tensor { ts[0].Name, ts[1].Name = "dens", "ewide"; return ts })
	check("same bits, other type", func(ts []assemble.Tensor) []assemble.Tensor {
		t := &ts[3]
		t.Float32 = make([]float32, len(t.Int32))
		for i, v := range t.Int32 {
			t.Float32[i] = math.Float32frombits(uint32(v))
		}
		t.Int32 = nil
		return ts
	})
	check("extra empty tensor", func(ts []assemble.Tensor) []assemble.Tensor { return append(ts, assemble.Tensor{}) })
	check("no tensors", func([]assemble.Tensor) []assemble.Tensor { return nil })
}
