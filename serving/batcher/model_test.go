package batcher

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/serving/onnxrt"
)

// session loads serving/testdata/models/<name>.onnx into ONNX Runtime with
// one intra-op thread, the setting for a server running many requests.
func session(t testing.TB, name string) *onnxrt.Session {
	t.Helper()
	if err := onnxrt.Init(""); err != nil {
		t.Fatal(err)
	}
	model, err := os.ReadFile(filepath.Join("..", "testdata", "models", name+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := onnxrt.NewSession(model, onnxrt.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// oneRow is a request of one row of width random features.
func oneRow(rng *rand.Rand, name string, width int) []onnxrt.Tensor {
	x := make([]float32, width)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return []onnxrt.Tensor{{Name: name, Shape: []int64{1, int64(width)}, Float32: x}}
}

// TestModels sends many concurrent single-row requests through a batcher
// to real models and checks every answer against an unbatched run of the
// same row: next_product.onnx (float32 [batch,12] -> [batch,8]) and
// zipmap_classifier.onnx (float32 [batch,4] -> string labels [batch] and
// one probability map per row).
func TestModels(t *testing.T) {
	for _, tc := range []struct {
		model, input string
		width        int
	}{
		{"next_product", "features", 12},
		{"zipmap_classifier", "input", 4},
	} {
		t.Run(tc.model, func(t *testing.T) {
			s := session(t, tc.model)
			b := New(s.Run, Options{MaxBatch: 64, MaxDelay: 500 * time.Microsecond})
			defer b.Close()
			const goroutines, each = 64, 8
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 5))
					for i := range each {
						in := oneRow(rng, tc.input, tc.width)
						got, err := b.Run(context.Background(), in)
						if err != nil {
							t.Errorf("batched: %v", err)
							return
						}
						want, err := s.Run(context.Background(), in)
						if err != nil {
							t.Errorf("alone: %v", err)
							return
						}
						if msg := sameOutputs(got, want, 1e-6); msg != "" {
							t.Errorf("goroutine %d request %d: %s", g, i, msg)
						}
					}
				})
			}
			wg.Wait()
			st := b.Stats()
			if st.Requests != goroutines*each || st.Rows != goroutines*each {
				t.Errorf("Stats %+v", st)
			}
			t.Logf("%d requests in %d runs (%.1f rows per run)", st.Requests, st.Batches, st.AvgBatch)
		})
	}
}

// sameOutputs compares outputs, numbers within tol; "" when they agree.
func sameOutputs(got, want []onnxrt.Tensor, tol float64) string {
	if len(got) != len(want) {
		return "different output counts"
	}
	for i := range want {
		g, w := &got[i], &want[i]
		switch {
		case g.Name != w.Name || len(g.Shape) != len(w.Shape) || g.Len() != w.Len() || g.ElementType() != w.ElementType():
			return "output " + w.Name + ": different name, shape or type"
		case w.Float32 != nil:
			for j := range w.Float32 {
				if math.Abs(float64(g.Float32[j]-w.Float32[j])) > tol {
					return "output " + w.Name + ": values differ"
				}
			}
		case w.Strings != nil:
			for j := range w.Strings {
				if g.Strings[j] != w.Strings[j] {
					return "output " + w.Name + ": strings differ"
				}
			}
		case w.Maps != nil:
			for j := range w.Maps {
				if len(g.Maps[j]) != len(w.Maps[j]) {
					return "output " + w.Name + ": maps differ"
				}
				for k, v := range w.Maps[j] {
					if gv, ok := g.Maps[j][k]; !ok || math.Abs(float64(gv-v)) > tol {
						return "output " + w.Name + ": maps differ"
					}
				}
			}
		default:
			return "output " + w.Name + ": unexpected type"
		}
	}
	return ""
}
