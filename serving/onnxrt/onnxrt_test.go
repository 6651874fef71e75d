package onnxrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const modelDir = "../testdata/models"

// childEnv marks a re-executed test binary that must not call Init (to test
// Init's own errors in a fresh process).
const childEnv = "ONNXRT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		if err := Init(""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func readModel(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelDir, name+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSession(t testing.TB, name string, opt SessionOptions) *Session {
	t.Helper()
	s, err := NewSession(readModel(t, name), opt)
	if err != nil {
		t.Fatalf("NewSession(%s): %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close(%s): %v", name, err)
		}
	})
	return s
}

// expected is a <model>.expected.json written by
// scripts/models/export_test_models.py.
type expected struct {
	Model      string         `json:"model"`
	ComputedBy string         `json:"computed_by"`
	Inputs     []expectTensor `json:"inputs"`
	Outputs    []expectTensor `json:"outputs"`
}

type expectTensor struct {
	Name  string               `json:"name"`
	Type  string               `json:"type"`
	Shape []int64              `json:"shape"`
	Data  json.RawMessage      `json:"data"`
	Maps  []map[string]float64 `json:"maps"`
}

func readExpected(t *testing.T, name string) expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelDir, name+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("%s.expected.json: %v", name, err)
	}
	return e
}

// tensor converts an expected tensor to a Tensor.
func (et expectTensor) tensor(t *testing.T) Tensor {
	t.Helper()
	out := Tensor{Name: et.Name, Shape: et.Shape}
	var err error
	switch ElementType(et.Type) {
	case Float32:
		var f []float64
		err = json.Unmarshal(et.Data, &f)
		out.Float32 = make([]float32, len(f))
		for i, v := range f {
			out.Float32[i] = float32(v)
		}
	case Float64:
		err = json.Unmarshal(et.Data, &out.Float64)
	case Int64:
		err = json.Unmarshal(et.Data, &out.Int64)
	case Int32:
		err = json.Unmarshal(et.Data, &out.Int32)
	case Bool:
		err = json.Unmarshal(et.Data, &out.Bool)
	case String:
		err = json.Unmarshal(et.Data, &out.Strings)
	case "map(string,float32)", "map(int64,float32)":
		out.Maps = make([]map[string]float32, len(et.Maps))
		for i, m := range et.Maps {
			out.Maps[i] = map[string]float32{}
			for k, v := range m {
				out.Maps[i][k] = float32(v)
			}
		}
	default:
		t.Fatalf("%s: type %q", et.Name, et.Type)
	}
	if err != nil {
		t.Fatalf("%s: %v", et.Name, err)
	}
	return out
}

// rows slices rows [from, to) of a batch-major tensor; a scalar is returned
// whole.
func rows(x Tensor, from, to int) Tensor {
	if len(x.Shape) == 0 {
		return x
	}
	n := int(x.Shape[0])
	per := 0
	if n > 0 {
		per = x.Len() / n
	}
	a, b := from*per, to*per
	out := Tensor{Name: x.Name, Shape: append([]int64{int64(to - from)}, x.Shape[1:]...)}
	switch {
	case x.Float32 != nil:
		out.Float32 = x.Float32[a:b]
	case x.Float64 != nil:
		out.Float64 = x.Float64[a:b]
	case x.Int64 != nil:
		out.Int64 = x.Int64[a:b]
	case x.Int32 != nil:
		out.Int32 = x.Int32[a:b]
	case x.Bool != nil:
		out.Bool = x.Bool[a:b]
	case x.Strings != nil:
		out.Strings = x.Strings[a:b]
	case x.Maps != nil:
		out.Maps = x.Maps[from:to]
	}
	return out
}

// close32 compares with a relative tolerance of 1e-5 (and 1e-7 absolute,
// for values near zero).
func close32(got, want float64) bool {
	return math.Abs(got-want) <= 1e-5*math.Abs(want)+1e-7
}

func compare(t *testing.T, got, want Tensor) {
	t.Helper()
	if got.Name != want.Name {
		t.Errorf("output name %q, want %q", got.Name, want.Name)
	}
	if !slices.Equal(got.Shape, want.Shape) {
		t.Errorf("%s: shape %v, want %v", want.Name, got.Shape, want.Shape)
	}
	if g, w := got.ElementType(), want.ElementType(); g != w {
		t.Fatalf("%s: element type %q (%s set), want %q", want.Name, g, got.setNames(), w)
	}
	if got.Len() != want.Len() {
		t.Fatalf("%s: %d values, want %d", want.Name, got.Len(), want.Len())
	}
	switch {
	case want.Float32 != nil:
		for i := range want.Float32 {
			if !close32(float64(got.Float32[i]), float64(want.Float32[i])) {
				t.Errorf("%s[%d] = %.9g, want %.9g", want.Name, i, got.Float32[i], want.Float32[i])
			}
		}
	case want.Float64 != nil:
		for i := range want.Float64 {
			if !close32(got.Float64[i], want.Float64[i]) {
				t.Errorf("%s[%d] = %.17g, want %.17g", want.Name, i, got.Float64[i], want.Float64[i])
			}
		}
	case want.Int64 != nil:
		if !slices.Equal(got.Int64, want.Int64) {
			t.Errorf("%s = %v, want %v", want.Name, got.Int64, want.Int64)
		}
	case want.Int32 != nil:
		if !slices.Equal(got.Int32, want.Int32) {
			t.Errorf("%s = %v, want %v", want.Name, got.Int32, want.Int32)
		}
	case want.Bool != nil:
		if !slices.Equal(got.Bool, want.Bool) {
			t.Errorf("%s = %v, want %v", want.Name, got.Bool, want.Bool)
		}
	case want.Strings != nil:
		if !slices.Equal(got.Strings, want.Strings) {
			t.Errorf("%s = %q, want %q", want.Name, got.Strings, want.Strings)
		}
	case want.Maps != nil:
		for i, wm := range want.Maps {
			if len(got.Maps[i]) != len(wm) {
				t.Errorf("%s[%d] = %v, want %v", want.Name, i, got.Maps[i], wm)
				continue
			}
			for k, w := range wm {
				g, ok := got.Maps[i][k]
				if !ok || !close32(float64(g), float64(w)) {
					t.Errorf("%s[%d][%q] = %.9g (present %v), want %.9g", want.Name, i, k, g, ok, w)
				}
			}
		}
	}
}

var exportedModels = []string{"next_product", "timing", "channel", "generic_int64_input", "zipmap_classifier", "zipmap_int64_classifier", "all_types"}

// TestExpectedOutputs runs every exported model through ONNX Runtime, the
// whole batch and then row by row, and compares with the outputs PyTorch (or
// numpy) computed when the model was exported.
func TestExpectedOutputs(t *testing.T) {
	for _, name := range exportedModels {
		t.Run(name, func(t *testing.T) {
			e := readExpected(t, name)
			s := newSession(t, name, SessionOptions{})
			var in, want []Tensor
			for _, x := range e.Inputs {
				in = append(in, x.tensor(t))
			}
			for _, x := range e.Outputs {
				want = append(want, x.tensor(t))
			}
			// Feed the inputs in reverse: Run matches them by name.
			slices.Reverse(in)
			got, err := s.Run(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d outputs, want %d", len(got), len(want))
			}
			for i := range want {
				compare(t, got[i], want[i])
			}

			batch := 0
			for _, x := range in {
				if len(x.Shape) > 0 {
					batch = int(x.Shape[0])
				}
			}
			for r := range batch {
				one := make([]Tensor, len(in))
				for i := range in {
					one[i] = rows(in[i], r, r+1)
				}
				got, err := s.Run(context.Background(), one)
				if err != nil {
					t.Fatalf("row %d: %v", r, err)
				}
				for i := range want {
					compare(t, got[i], rows(want[i], r, r+1))
				}
			}
		})
	}
}

func TestInspect(t *testing.T) {
	f32 := func(name string, shape ...int64) TensorInfo {
		return TensorInfo{Name: name, Kind: KindTensor, Type: Float32, Shape: shape}
	}
	tests := []struct {
		model         string
		inputs, outpt []TensorInfo
	}{
		{"next_product", []TensorInfo{f32("features", -1, 12)}, []TensorInfo{f32("probabilities", -1, 8)}},
		{"timing", []TensorInfo{f32("features", -1, 12)}, []TensorInfo{f32("probabilities", -1, 6)}},
		{"channel", []TensorInfo{f32("features", -1, 12), f32("context", -1, 4)}, []TensorInfo{f32("probabilities", -1, 4)}},
		{"generic_int64_input",
			[]TensorInfo{{Name: "indices", Kind: KindTensor, Type: Int64, Shape: []int64{-1, 3}}},
			[]TensorInfo{f32("score", -1, 1)}},
		{"zipmap_classifier",
			[]TensorInfo{f32("input", -1, 4)},
			[]TensorInfo{
				{Name: "output_label", Kind: KindTensor, Type: String, Shape: []int64{-1}},
				{Name: "output_probability", Kind: KindSequence, Type: Float32, KeyType: String},
			}},
		{"zipmap_int64_classifier",
			[]TensorInfo{f32("input", -1, 4)},
			[]TensorInfo{
				{Name: "output_label", Kind: KindTensor, Type: Int64, Shape: []int64{-1}},
				{Name: "output_probability", Kind: KindSequence, Type: Float32, KeyType: Int64},
			}},
		{"all_types",
			[]TensorInfo{
				{Name: "f64", Kind: KindTensor, Type: Float64, Shape: []int64{-1, 2}},
				{Name: "i32", Kind: KindTensor, Type: Int32, Shape: []int64{-1, 2}},
				{Name: "flag", Kind: KindTensor, Type: Bool, Shape: []int64{-1, 2}},
				{Name: "text", Kind: KindTensor, Type: String, Shape: []int64{-1, 1}},
				{Name: "scale", Kind: KindTensor, Type: Float32, Shape: []int64{}},
			},
			[]TensorInfo{
				{Name: "f64_out", Kind: KindTensor, Type: Float64, Shape: []int64{-1, 2}},
				{Name: "i32_out", Kind: KindTensor, Type: Int32, Shape: []int64{-1, 2}},
				{Name: "i64_out", Kind: KindTensor, Type: Int64, Shape: []int64{-1, 2}},
				{Name: "flag_out", Kind: KindTensor, Type: Bool, Shape: []int64{-1, 2}},
				{Name: "text_out", Kind: KindTensor, Type: String, Shape: []int64{-1, 1}},
				{Name: "scale_out", Kind: KindTensor, Type: Float32, Shape: []int64{}},
			}},
		{"misdeclared_shape", []TensorInfo{f32("x", -1, 2)}, []TensorInfo{f32("y", -1, 2)}},
		{"fixed_batch", []TensorInfo{f32("features", 1, 12)}, []TensorInfo{f32("probabilities", 1, 8)}},
		{"slow_loop", []TensorInfo{f32("x", 1)}, []TensorInfo{f32("y", 1)}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			in, out, err := Inspect(readModel(t, tc.model))
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []TensorInfo) {
				t.Helper()
				if len(got) != len(want) {
					t.Fatalf("%s: %v, want %v", what, got, want)
				}
				for i := range want {
					g := got[i]
					g.dims = nil
					if g.Name != want[i].Name || g.Kind != want[i].Kind || g.Type != want[i].Type ||
						g.KeyType != want[i].KeyType || !slices.Equal(g.Shape, want[i].Shape) ||
						(g.Shape == nil) != (want[i].Shape == nil) {
						t.Errorf("%s %d: %+v, want %+v", what, i, g, want[i])
					}
				}
			}
			check("inputs", in, tc.inputs)
			check("outputs", out, tc.outpt)
		})
	}
}

func TestInspectShowsSymbolicDims(t *testing.T) {
	in, out, err := Inspect(readModel(t, "zipmap_classifier"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := in[0].String(), "float32 [batch,4]"; got != want {
		t.Errorf("input: %q, want %q", got, want)
	}
	if got, want := out[1].String(), "sequence<map<string,float32>>"; got != want {
		t.Errorf("ZipMap output: %q, want %q", got, want)
	}
}

func TestBadModels(t *testing.T) {
	tests := []struct {
		name  string
		model []byte
		want  error
	}{
		{"random bytes", readModel(t, "not_onnx"), ErrInvalidModel},
		{"empty", []byte{}, ErrInvalidModel},
		{"nil", nil, ErrInvalidModel},
		{"truncated", readModel(t, "next_product")[:1000], ErrInvalidModel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Inspect(tc.model); !errors.Is(err, tc.want) {
				t.Errorf("Inspect: %v, want %v", err, tc.want)
			}
			if s, err := NewSession(tc.model, SessionOptions{}); !errors.Is(err, tc.want) {
				t.Errorf("NewSession: %v, want %v", err, tc.want)
				if s != nil {
					_ = s.Close()
				}
			}
		})
	}
}

func features(rows, width int) []float32 {
	x := make([]float32, rows*width)
	for i := range x {
		x[i] = float32(i%7) / 7
	}
	return x
}

func TestRunInputErrors(t *testing.T) {
	product := newSession(t, "next_product", SessionOptions{})
	channel := newSession(t, "channel", SessionOptions{})
	fixed := newSession(t, "fixed_batch", SessionOptions{})
	ids := newSession(t, "generic_int64_input", SessionOptions{})
	f := func(name string, shape []int64) Tensor {
		return Tensor{Name: name, Shape: shape, Float32: features(int(shape[0]), int(shape[len(shape)-1]))}
	}
	tests := []struct {
		name    string
		s       *Session
		in      []Tensor
		input   string
		problem Problem
	}{
		{"wrong input name", product, []Tensor{f("featurs", []int64{2, 12})}, "featurs", ProblemUnknown},
		{"extra input", product, []Tensor{f("features", []int64{2, 12}), f("context", []int64{2, 4})}, "context", ProblemUnknown},
		{"duplicate input", product, []Tensor{f("features", []int64{2, 12}), f("features", []int64{2, 12})}, "features", ProblemDuplicate},
		{"no inputs", product, nil, "features", ProblemMissing},
		{"missing second input", channel, []Tensor{f("features", []int64{2, 12})}, "context", ProblemMissing},
		{"wrong type", product, []Tensor{{Name: "features", Shape: []int64{1, 12}, Int64: make([]int64, 12)}}, "features", ProblemType},
		{"float64 for float32", product, []Tensor{{Name: "features", Shape: []int64{1, 12}, Float64: make([]float64, 12)}}, "features", ProblemType},
		{"float32 for int64", ids, []Tensor{f("indices", []int64{2, 3})}, "indices", ProblemType},
		{"no data", product, []Tensor{{Name: "features", Shape: []int64{1, 12}}}, "features", ProblemType},
		{"two data slices", product, []Tensor{{Name: "features", Shape: []int64{1, 12}, Float32: make([]float32, 12), Float64: make([]float64, 12)}}, "features", ProblemType},
		{"maps as input", product, []Tensor{{Name: "features", Shape: []int64{1}, Maps: []map[string]float32{{}}}}, "features", ProblemType},
		{"wrong width", product, []Tensor{f("features", []int64{2, 11})}, "features", ProblemShape},
		{"wrong rank", product, []Tensor{{Name: "features", Shape: []int64{24}, Float32: features(2, 12)}}, "features", ProblemShape},
		{"rank 3", product, []Tensor{{Name: "features", Shape: []int64{2, 12, 1}, Float32: features(2, 12)}}, "features", ProblemShape},
		{"empty batch", product, []Tensor{{Name: "features", Shape: []int64{0, 12}, Float32: []float32{}}}, "features", ProblemShape},
		{"negative dim", product, []Tensor{{Name: "features", Shape: []int64{-2, 12}, Float32: features(2, 12)}}, "features", ProblemShape},
		{"batch 2 for fixed batch 1", fixed, []Tensor{f("features", []int64{2, 12})}, "features", ProblemShape},
		{"batch differs between inputs", channel, []Tensor{f("features", []int64{2, 12}), f("context", []int64{3, 4})}, "context", ProblemShape},
		{"data shorter than shape", product, []Tensor{{Name: "features", Shape: []int64{2, 12}, Float32: features(1, 12)}}, "features", ProblemLength},
		{"data longer than shape", product, []Tensor{{Name: "features", Shape: []int64{1, 12}, Float32: features(2, 12)}}, "features", ProblemLength},
		{"huge shape", product, []Tensor{{Name: "features", Shape: []int64{1 << 60, 12}, Float32: features(1, 12)}}, "features", ProblemLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.s.Run(context.Background(), tc.in)
			if out != nil {
				t.Errorf("outputs %v with an error", out)
			}
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("error %v, want ErrInvalidInput", err)
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T, want *InputError", err)
			}
			if ie.Input != tc.input || ie.Problem != tc.problem {
				t.Errorf("input %q problem %q, want %q %q (%v)", ie.Input, ie.Problem, tc.input, tc.problem, err)
			}
			if ie.Problem != ProblemDuplicate && ie.Expected == "" {
				t.Errorf("no expectation in %v", err)
			}
			if (ie.Problem == ProblemType || ie.Problem == ProblemShape || ie.Problem == ProblemLength) && ie.Given == "" {
				t.Errorf("nothing given in %v", err)
			}
			t.Log(err)
		})
	}
}

// TestMisdeclaredOutputShape runs a model whose declared output shape
// ([batch,2]) is wrong: the Run with a preallocated output fails inside ONNX
// Runtime, the session retries without, and stops preallocating.
func TestMisdeclaredOutputShape(t *testing.T) {
	s := newSession(t, "misdeclared_shape", SessionOptions{})
	if s.plans[0].fixed == nil {
		t.Fatal("the declared output shape gave no preallocation plan")
	}
	e := readExpected(t, "misdeclared_shape")
	for i := range 2 {
		out, err := s.Run(context.Background(), []Tensor{e.Inputs[0].tensor(t)})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		compare(t, out[0], e.Outputs[0].tensor(t))
		if !s.noPrealloc.Load() {
			t.Errorf("run %d: still preallocating", i)
		}
	}
}

// TestRunContext checks that a cancelled or expiring context stops a Run:
// slow_loop.onnx loops 2^50 times unless ONNX Runtime's terminate flag ends it.
func TestRunContext(t *testing.T) {
	s := newSession(t, "slow_loop", SessionOptions{})
	x := []Tensor{{Name: "x", Shape: []int64{1}, Float32: []float32{0}}}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(cancelled, x); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before: %v, want context.Canceled", err)
	}

	for i := range 3 { // the RunOptions of a terminated Run must not leak into the next
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		_, err := s.Run(ctx, x)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run %d: %v, want context.DeadlineExceeded", i, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("run %d stopped after %v", i, d)
		}
	}

	// A cancellable context that is not cancelled leaves the Run alone, and
	// reuses RunOptions.
	p := newSession(t, "next_product", SessionOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 20 {
		if _, err := p.Run(ctx, []Tensor{{Name: "features", Shape: []int64{1, 12}, Float32: features(1, 12)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConcurrentRuns runs one session from many goroutines with different
// batch sizes and checks every answer against a sequential run.
func TestConcurrentRuns(t *testing.T) {
	s := newSession(t, "channel", SessionOptions{})
	input := func(batch int) []Tensor {
		return []Tensor{
			{Name: "features", Shape: []int64{int64(batch), 12}, Float32: features(batch, 12)},
			{Name: "context", Shape: []int64{int64(batch), 4}, Float32: features(batch, 4)},
		}
	}
	want := map[int][]float32{}
	for batch := 1; batch <= 8; batch++ {
		out, err := s.Run(context.Background(), input(batch))
		if err != nil {
			t.Fatal(err)
		}
		want[batch] = out[0].Float32
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range 100 {
				batch := 1 + (g+i)%8
				out, err := s.Run(ctx, input(batch))
				if err != nil {
					errs <- err
					return
				}
				if !slices.Equal(out[0].Float32, want[batch]) {
					errs <- fmt.Errorf("goroutine %d run %d batch %d: %v, want %v", g, i, batch, out[0].Float32, want[batch])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClose checks that Close waits for a Run in flight, and that a closed
// session refuses Runs.
func TestClose(t *testing.T) {
	s, err := NewSession(readModel(t, "slow_loop"), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() {
		_, err := s.Run(ctx, []Tensor{{Name: "x", Shape: []int64{1}, Float32: []float32{0}}})
		runErr <- err
	}()
	// Wait until the Run holds the session (it then loops until cancelled).
	for s.mu.TryLock() {
		s.mu.Unlock()
		runtime.Gosched()
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a Run was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("run: %v, want context.Canceled", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := s.Run(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSessionOptions(t *testing.T) {
	for _, opt := range []SessionOptions{{IntraOpThreads: 1}, {IntraOpThreads: 2, InterOpThreads: 2}} {
		s := newSession(t, "channel", opt)
		e := readExpected(t, "channel")
		out, err := s.Run(context.Background(), []Tensor{e.Inputs[0].tensor(t), e.Inputs[1].tensor(t)})
		if err != nil {
			t.Fatalf("%+v: %v", opt, err)
		}
		compare(t, out[0], e.Outputs[0].tensor(t))
	}
}

func TestInitAgain(t *testing.T) {
	if err := Init(""); err != nil {
		t.Errorf("second Init: %v", err)
	}
	if err := Init(DefaultLibPath()); err != nil {
		t.Errorf("Init with the loaded path: %v", err)
	}
	if err := Init(filepath.Join(t.TempDir(), "libonnxruntime.so.1")); err == nil {
		t.Error("Init with another library succeeded")
	}
	if Version() != LibVersion {
		t.Errorf("Version %q, want %q", Version(), LibVersion)
	}
}

// TestInitMissingLibrary runs the test binary again, without Init, to check
// what a process without the library sees.
func TestInitMissingLibrary(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestInitMissingLibrary$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"=1", "ONNXRT_TEST_LIB="+DefaultLibPath())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	model := readModel(t, "next_product")
	if _, _, err := Inspect(model); !errors.Is(err, ErrNoLibrary) {
		t.Errorf("Inspect before Init: %v, want ErrNoLibrary", err)
	}
	if _, err := NewSession(model, SessionOptions{}); !errors.Is(err, ErrNoLibrary) {
		t.Errorf("NewSession before Init: %v, want ErrNoLibrary", err)
	}
	missing := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	t.Setenv("ONNXRUNTIME_LIB", missing)
	err := Init("")
	if !errors.Is(err, ErrNoLibrary) {
		t.Fatalf("Init: %v, want ErrNoLibrary", err)
	}
	// The message is the user's guide: it names the path and the fix.
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("Init error %q does not name %s and `make deps`", err, missing)
	}
	notLib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(notLib, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Init(notLib); !errors.Is(err, ErrNoLibrary) || !strings.Contains(err.Error(), notLib) {
		t.Errorf("Init of a non-library: %v", err)
	}
	// A failed Init can be retried with the right library.
	t.Setenv("ONNXRUNTIME_LIB", "")
	if err := Init(os.Getenv("ONNXRT_TEST_LIB")); err != nil {
		t.Fatalf("Init after failures: %v", err)
	}
	if _, _, err := Inspect(model); err != nil {
		t.Errorf("Inspect after Init: %v", err)
	}
}
