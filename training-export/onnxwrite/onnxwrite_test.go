package onnxwrite_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	onnxv1 "github.com/tailorhq/tailor/proto/gen/tailor/onnx/v1"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/training-export/onnxwrite"
	"google.golang.org/protobuf/proto"
)

// The models are checked on the real ONNX Runtime (onnxrt.DefaultLibPath,
// i.e. $ONNXRUNTIME_LIB, where `make deps` puts it); without it the tests
// fail rather than skip.
func TestMain(m *testing.M) {
	if err := onnxrt.Init(""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// dense is a layer with weights drawn uniformly from [-1, 1).
func dense(r *rand.Rand, in, out int, relu bool) onnxwrite.Dense {
	return onnxwrite.Dense{In: in, Out: out, W: uniform(r, in*out), B: uniform(r, out), ReLU: relu}
}

func uniform(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return v
}

// forward is the oracle: the spec's classifier evaluated naively in
// float64, x being rows of Layers[0].In values.
func forward(spec onnxwrite.ClassifierSpec, x []float32, rows int) []float64 {
	a := make([]float64, len(x))
	for i, v := range x {
		a[i] = float64(v)
	}
	for _, l := range spec.Layers {
		y := make([]float64, rows*l.Out)
		for n := range rows {
			for j := range l.Out {
				s := float64(l.B[j])
				for i := range l.In {
					s += a[n*l.In+i] * float64(l.W[i*l.Out+j])
				}
				if l.ReLU {
					s = max(s, 0)
				}
				y[n*l.Out+j] = s
			}
		}
		a = y
	}
	if spec.Logits {
		return a
	}
	width := spec.Layers[len(spec.Layers)-1].Out
	for n := range rows {
		row := a[n*width : (n+1)*width]
		m := slices.Max(row)
		var sum float64
		for j := range row {
			row[j] = math.Exp(row[j] - m)
			sum += row[j]
		}
		for j := range row {
			row[j] /= sum
		}
	}
	return a
}

func newSession(t *testing.T, model []byte) *onnxrt.Session {
	t.Helper()
	s, err := onnxrt.NewSession(model, onnxrt.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func specs(r *rand.Rand) map[string]onnxwrite.ClassifierSpec {
	return map[string]onnxwrite.ClassifierSpec{
		"logistic regression": {
			Input: "features", Output: "probabilities",
			Layers: []onnxwrite.Dense{dense(r, 12, 3, false)},
		},
		"binary logistic regression": {
			Input: "features", Output: "probabilities",
			Layers: []onnxwrite.Dense{dense(r, 5, 2, false)},
		},
		"mlp": {
			Input: "features", Output: "probabilities",
			Layers: []onnxwrite.Dense{dense(r, 12, 32, true), dense(r, 32, 16, true), dense(r, 16, 4, false)},
		},
		"mlp logits": {
			Input: "x", Output: "scores", Logits: true,
			Layers: []onnxwrite.Dense{dense(r, 12, 32, true), dense(r, 32, 16, true), dense(r, 16, 4, false)},
		},
	}
}

func TestClassifierMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for name, spec := range specs(r) {
		t.Run(name, func(t *testing.T) {
			model, err := onnxwrite.Classifier(spec)
			if err != nil {
				t.Fatalf("Classifier: %v", err)
			}
			s := newSession(t, model)
			in, out := spec.Layers[0].In, spec.Layers[len(spec.Layers)-1].Out
			for _, rows := range []int{1, 7, 300} {
				x := make([]float32, rows*in)
				for i := range x {
					x[i] = float32(r.NormFloat64() * 2)
				}
				got, err := s.Run(context.Background(), []onnxrt.Tensor{{Name: spec.Input, Shape: []int64{int64(rows), int64(in)}, Float32: x}})
				if err != nil {
					t.Fatalf("rows=%d: Run: %v", rows, err)
				}
				if len(got) != 1 || got[0].Name != spec.Output || !slices.Equal(got[0].Shape, []int64{int64(rows), int64(out)}) {
					t.Fatalf("rows=%d: outputs %q shape %v, want one %q of shape [%d %d]", rows, got[0].Name, got[0].Shape, spec.Output, rows, out)
				}
				want := forward(spec, x, rows)
				for i, g := range got[0].Float32 {
					// 1e-5 absolute, relative for logits beyond 1.
					if d := math.Abs(float64(g) - want[i]); d > 1e-5*max(1, math.Abs(want[i])) {
						t.Fatalf("rows=%d: output[%d][%d] = %v, oracle %v (off by %.3g)", rows, i/out, i%out, g, want[i], d)
					}
				}
				if !spec.Logits {
					for n := range rows {
						var sum float64
						for _, p := range got[0].Float32[n*out : (n+1)*out] {
							sum += float64(p)
						}
						if math.Abs(sum-1) > 1e-5 {
							t.Fatalf("rows=%d: row %d sums to %v", rows, n, sum)
						}
					}
				}
			}
		})
	}
}

// The registry validates a registered model with InspectONNX; a written
// model must pass it with the spec's names and shapes, and keep the
// symbolic batch dimension.
func TestInspectONNX(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for name, spec := range specs(r) {
		t.Run(name, func(t *testing.T) {
			model, err := onnxwrite.Classifier(spec)
			if err != nil {
				t.Fatalf("Classifier: %v", err)
			}
			inputs, outputs, err := registry.InspectONNX(model)
			if err != nil {
				t.Fatalf("InspectONNX: %v", err)
			}
			in, out := spec.Layers[0].In, spec.Layers[len(spec.Layers)-1].Out
			wantIn := []registry.Tensor{{Name: spec.Input, Kind: "tensor", Type: "float32", Shape: []int64{-1, int64(in)}}}
			wantOut := []registry.Tensor{{Name: spec.Output, Kind: "tensor", Type: "float32", Shape: []int64{-1, int64(out)}}}
			if !slices.EqualFunc(inputs, wantIn, equalTensor) || !slices.EqualFunc(outputs, wantOut, equalTensor) {
				t.Errorf("InspectONNX = %v -> %v, want %v -> %v", inputs, outputs, wantIn, wantOut)
			}

			s := newSession(t, model)
			if got, want := s.Inputs()[0].String(), fmt.Sprintf("float32 [%s,%d]", onnxwrite.BatchDim, in); got != want {
				t.Errorf("input %s, want %s", got, want)
			}
			if got, want := s.Outputs()[0].String(), fmt.Sprintf("float32 [%s,%d]", onnxwrite.BatchDim, out); got != want {
				t.Errorf("output %s, want %s", got, want)
			}
		})
	}
}

func equalTensor(a, b registry.Tensor) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.Type == b.Type && a.KeyType == b.KeyType && slices.Equal(a.Shape, b.Shape)
}

// The header fields land where ONNX puts them, and the same spec gives the
// same bytes (metadata in key order).
func TestModelHeader(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	spec := onnxwrite.ClassifierSpec{
		Input: "features", Output: "probabilities",
		Layers:       []onnxwrite.Dense{dense(r, 4, 3, false)},
		ProducerName: "tailor-train", ProducerVersion: "0.3.1", Doc: "next channel",
		Metadata: map[string]string{"labels": "email,sms,push", "trained_at": "2026-01-02", "a": "1"},
	}
	b1, err := onnxwrite.Classifier(spec)
	if err != nil {
		t.Fatalf("Classifier: %v", err)
	}
	for range 5 {
		b2, err := onnxwrite.Classifier(spec)
		if err != nil {
			t.Fatalf("Classifier: %v", err)
		}
		if !slices.Equal(b1, b2) {
			t.Fatal("the same spec gave different bytes")
		}
	}
	var m onnxv1.ModelProto
	if err := proto.Unmarshal(b1, &m); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if m.GetIrVersion() != onnxwrite.IRVersion || len(m.GetOpsetImport()) != 1 ||
		m.GetOpsetImport()[0].GetDomain() != "" || m.GetOpsetImport()[0].GetVersion() != onnxwrite.OpsetVersion {
		t.Errorf("ir_version %d, opset_import %v", m.GetIrVersion(), m.GetOpsetImport())
	}
	if m.GetProducerName() != "tailor-train" || m.GetProducerVersion() != "0.3.1" || m.GetDocString() != "next channel" {
		t.Errorf("producer %q %q, doc %q", m.GetProducerName(), m.GetProducerVersion(), m.GetDocString())
	}
	var keys []string
	for _, p := range m.GetMetadataProps() {
		keys = append(keys, p.GetKey())
		if p.GetValue() != spec.Metadata[p.GetKey()] {
			t.Errorf("metadata %q = %q, want %q", p.GetKey(), p.GetValue(), spec.Metadata[p.GetKey()])
		}
	}
	if !slices.Equal(keys, []string{"a", "labels", "trained_at"}) {
		t.Errorf("metadata keys %v, want sorted a, labels, trained_at", keys)
	}
	newSession(t, b1) // ONNX Runtime loads it with the metadata

	spec.ProducerName = ""
	b3, err := onnxwrite.Classifier(spec)
	if err != nil {
		t.Fatalf("Classifier: %v", err)
	}
	if err := proto.Unmarshal(b3, &m); err != nil || m.GetProducerName() != onnxwrite.DefaultProducer {
		t.Errorf("producer %q (%v), want the default %q", m.GetProducerName(), err, onnxwrite.DefaultProducer)
	}
}

func TestClassifierInvalidSpec(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	valid := func() onnxwrite.ClassifierSpec {
		return onnxwrite.ClassifierSpec{
			Input: "features", Output: "probabilities",
			Layers: []onnxwrite.Dense{dense(r, 6, 8, true), dense(r, 8, 3, false)},
		}
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(-1))
	cases := []struct {
		name    string
		edit    func(*onnxwrite.ClassifierSpec)
		layer   int
		problem onnxwrite.Problem
	}{
		{"no layers", func(s *onnxwrite.ClassifierSpec) { s.Layers = nil }, -1, onnxwrite.ProblemNoLayers},
		{"zero in", func(s *onnxwrite.ClassifierSpec) { s.Layers[0].In = 0 }, 0, onnxwrite.ProblemWidth},
		{"negative out", func(s *onnxwrite.ClassifierSpec) { s.Layers[1].Out = -3 }, 1, onnxwrite.ProblemWidth},
		{"widths do not chain", func(s *onnxwrite.ClassifierSpec) { s.Layers[1] = dense(r, 7, 3, false) }, 1, onnxwrite.ProblemChain},
		{"short weights", func(s *onnxwrite.ClassifierSpec) { s.Layers[0].W = s.Layers[0].W[:47] }, 0, onnxwrite.ProblemWeightsLength},
		{"long weights", func(s *onnxwrite.ClassifierSpec) { s.Layers[1].W = append(s.Layers[1].W, 0) }, 1, onnxwrite.ProblemWeightsLength},
		{"nil weights", func(s *onnxwrite.ClassifierSpec) { s.Layers[1].W = nil }, 1, onnxwrite.ProblemWeightsLength},
		{"overflowing widths", func(s *onnxwrite.ClassifierSpec) {
			s.Layers = []onnxwrite.Dense{{In: math.MaxInt / 2, Out: 4}}
		}, 0, onnxwrite.ProblemWeightsLength},
		{"short bias", func(s *onnxwrite.ClassifierSpec) { s.Layers[1].B = s.Layers[1].B[:2] }, 1, onnxwrite.ProblemBiasLength},
		{"NaN weight", func(s *onnxwrite.ClassifierSpec) { s.Layers[1].W[5] = nan }, 1, onnxwrite.ProblemNotFinite},
		{"infinite bias", func(s *onnxwrite.ClassifierSpec) { s.Layers[0].B[7] = inf }, 0, onnxwrite.ProblemNotFinite},
		{"no input name", func(s *onnxwrite.ClassifierSpec) { s.Input = "" }, -1, onnxwrite.ProblemName},
		{"no output name", func(s *onnxwrite.ClassifierSpec) { s.Output = "" }, -1, onnxwrite.ProblemName},
		{"input is output", func(s *onnxwrite.ClassifierSpec) { s.Output = s.Input }, -1, onnxwrite.ProblemName},
		{"output is an internal value", func(s *onnxwrite.ClassifierSpec) { s.Output = "dense1.gemm" }, -1, onnxwrite.ProblemName},
		{"input is a weight", func(s *onnxwrite.ClassifierSpec) { s.Input = "dense0.W" }, -1, onnxwrite.ProblemName},
		{"empty metadata key", func(s *onnxwrite.ClassifierSpec) { s.Metadata = map[string]string{"": "x"} }, -1, onnxwrite.ProblemMetadata},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid()
			tc.edit(&spec)
			model, err := onnxwrite.Classifier(spec)
			if !errors.Is(err, onnxwrite.ErrInvalidSpec) {
				t.Fatalf("Classifier = %d bytes, %v; want ErrInvalidSpec", len(model), err)
			}
			var se *onnxwrite.SpecError
			if !errors.As(err, &se) || se.Layer != tc.layer || se.Problem != tc.problem {
				t.Fatalf("error %v, want a SpecError for layer %d, problem %q", err, tc.layer, tc.problem)
			}
			if model != nil {
				t.Errorf("Classifier returned %d bytes with the error", len(model))
			}
		})
	}
}
