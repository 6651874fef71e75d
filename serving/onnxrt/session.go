package onnxrt

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	ort "github.com/yalue/onnxruntime_go"
)

// SessionOptions tunes a Session. Zero values keep ONNX Runtime's defaults.
type SessionOptions struct {
	// IntraOpThreads sizes the session's thread pool for work inside one
	// operator (0: one thread per physical core). Concurrent Runs share it.
	IntraOpThreads int
	// InterOpThreads above 1 switches the session to ONNX Runtime's
	// parallel execution mode (independent graph branches run at once)
	// with that many threads; 0 or 1 keeps sequential execution.
	InterOpThreads int
}

// Session is one model loaded into ONNX Runtime. It is safe for concurrent
// use: Runs proceed in parallel (ONNX Runtime's Run is thread-safe), and
// Close waits for the Runs in flight.
type Session struct {
	sess    *ort.DynamicAdvancedSession
	inputs  []TensorInfo
	outputs []TensorInfo
	// inputNames lists the input names for error messages.
	inputNames string

	mu     sync.RWMutex // Run holds it shared, Close exclusively
	closed bool

	// freeRunOpts keeps RunOptions of finished cancellable Runs for reuse.
	freeRunOpts chan *runOpts

	// plans[i] says how to size output i from the input shapes, so that
	// ONNX Runtime writes it straight into Go memory; nil when it cannot be
	// known before the Run (ONNX Runtime allocates it, the binding copies).
	plans []outputPlan
	// noPrealloc is set when a Run with preallocated outputs failed and the
	// same Run succeeded without: the model's declared output shapes lie.
	noPrealloc atomic.Bool
}

// outputPlan sizes one output: dimension d is fixed[d] when >= 0, else the
// size of dimension dim[d] of input in[d] (a shared symbolic dimension).
type outputPlan struct {
	fixed []int64
	in    []int
	dim   []int
}

// NewSession loads a model into ONNX Runtime. A model ONNX Runtime refuses
// gives an error wrapping ErrInvalidModel; one with an input or output that
// Tensor cannot carry gives ErrUnsupported, naming it. (The binding cannot
// describe a loaded session, so the model is loaded once more to read its
// inputs and outputs.)
func NewSession(model []byte, opt SessionOptions) (*Session, error) {
	inputs, outputs, err := Inspect(model)
	if err != nil {
		return nil, err
	}
	for _, in := range inputs {
		if in.Kind != KindTensor || !carried(in.Type) {
			return nil, fmt.Errorf("%w: input %q is %s; onnxrt feeds tensors of float32, float64, int64, int32, int8, uint8, bool or string",
				ErrUnsupported, in.Name, in)
		}
	}
	for _, out := range outputs {
		tensor := out.Kind == KindTensor && carried(out.Type)
		zipMap := out.Kind == KindSequence && out.Type == Float32 && (out.KeyType == Int64 || out.KeyType == String)
		if !tensor && !zipMap {
			return nil, fmt.Errorf("%w: output %q is %s; onnxrt reads tensors of float32, float64, int64, int32, int8, uint8, bool or string, and sequence<map<int64|string,float32>>",
				ErrUnsupported, out.Name, out)
		}
	}

	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnxrt: session options: %w", err)
	}
	defer so.Destroy()
	if opt.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opt.IntraOpThreads); err != nil {
			return nil, fmt.Errorf("onnxrt: intra-op threads %d: %w", opt.IntraOpThreads, err)
		}
	}
	if opt.InterOpThreads > 1 {
		if err := so.SetExecutionMode(ort.ExecutionModeParallel); err != nil {
			return nil, fmt.Errorf("onnxrt: parallel execution: %w", err)
		}
		if err := so.SetInterOpNumThreads(opt.InterOpThreads); err != nil {
			return nil, fmt.Errorf("onnxrt: inter-op threads %d: %w", opt.InterOpThreads, err)
		}
	}

	inNames := make([]string, len(inputs))
	for i, in := range inputs {
		inNames[i] = in.Name
	}
	outNames := make([]string, len(outputs))
	for i, out := range outputs {
		outNames[i] = out.Name
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(model, inNames, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("%w: ONNX Runtime cannot load it: %w", ErrInvalidModel, err)
	}
	return &Session{
		sess:        sess,
		inputs:      inputs,
		outputs:     outputs,
		inputNames:  strings.Join(inNames, ", "),
		freeRunOpts: make(chan *runOpts, 16),
		plans:       planOutputs(inputs, outputs),
	}, nil
}

// planOutputs finds the outputs whose shape the input shapes determine: a
// numeric tensor whose every dimension is fixed or a symbolic dimension
// ("batch") that an input declares too. ONNX requires a symbolic name to
// stand for one size throughout a graph; ONNX Runtime checks a
// preallocated output against the real shape and fails the Run otherwise.
func planOutputs(inputs, outputs []TensorInfo) []outputPlan {
	plans := make([]outputPlan, len(outputs))
	for i, out := range outputs {
		if out.Kind != KindTensor || out.Type == String || !carried(out.Type) || out.Shape == nil {
			continue
		}
		p := outputPlan{fixed: out.Shape, in: make([]int, len(out.Shape)), dim: make([]int, len(out.Shape))}
		ok := true
		for d, size := range out.Shape {
			if size > 0 {
				continue
			}
			if size == 0 { // an empty output: the binding cannot wrap it
				ok = false
				break
			}
			p.in[d], p.dim[d] = findDim(inputs, out, d)
			if p.in[d] < 0 {
				ok = false
				break
			}
		}
		if ok {
			plans[i] = p
		}
	}
	return plans
}

func findDim(inputs []TensorInfo, out TensorInfo, d int) (in, dim int) {
	if d >= len(out.dims) || out.dims[d] == "" {
		return -1, -1
	}
	for i, x := range inputs {
		for j, name := range x.dims {
			if name == out.dims[d] {
				return i, j
			}
		}
	}
	return -1, -1
}

func (p *outputPlan) shape(ordered []*Tensor) []int64 {
	shape := make([]int64, len(p.fixed))
	for d, size := range p.fixed {
		if size < 0 {
			size = ordered[p.in[d]].Shape[p.dim[d]]
		}
		shape[d] = size
	}
	return shape
}

// Inputs describes the model's inputs in the model's order. The slice is
// shared: do not modify it.
func (s *Session) Inputs() []TensorInfo { return s.inputs }

// Outputs describes the model's outputs, in the order Run returns them. The
// slice is shared: do not modify it.
func (s *Session) Outputs() []TensorInfo { return s.outputs }

// Run feeds the inputs, matched to the model's by name (in any order), and
// returns every output in the model's output order. An input that is
// missing, unknown, duplicated, or of the wrong element type or shape gives
// an *InputError before ONNX Runtime runs.
//
// Cancelling ctx stops a Run in progress through ONNX Runtime's terminate
// flag (RunOptions), which it checks between operators and loop iterations:
// a Run ends when the operator it is in finishes, and the error wraps
// ctx.Err(). A ctx that can never be cancelled (context.Background) costs
// nothing and makes the Run uninterruptible.
//
// Numeric outputs whose shape follows from the inputs' (fixed dimensions,
// or a symbolic one such as "batch" that an input shares) are allocated in
// Go memory before the Run and written by ONNX Runtime in place; others are
// copied out of ONNX Runtime's memory after it.
func (s *Session) Run(ctx context.Context, inputs []Tensor) ([]Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("onnxrt: run not started: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}

	nIn, nOut := len(s.inputs), len(s.outputs)
	ordered := make([]*Tensor, nIn)
	if err := s.match(inputs, ordered); err != nil {
		return nil, err
	}
	values := make([]ort.Value, nIn+nOut)
	defer destroyAll(values)
	for i, t := range ordered {
		v, err := newValue(t)
		if err != nil {
			return nil, fmt.Errorf("onnxrt: input %q: %w", t.Name, err)
		}
		values[i] = v
	}
	out := make([]Tensor, nOut)
	outValues := values[nIn:]
	prealloc := !s.noPrealloc.Load()
	if prealloc {
		prealloc = false
		for i := range s.plans {
			if s.plans[i].fixed == nil {
				continue
			}
			v, err := newOutput(s.outputs[i].Type, s.plans[i].shape(ordered), &out[i])
			if err != nil {
				return nil, fmt.Errorf("onnxrt: output %q: %w", s.outputs[i].Name, err)
			}
			outValues[i], prealloc = v, true
		}
	}
	// nil outputs: ONNX Runtime allocates them and the binding copies them
	// into Go memory.
	ro := s.acquireRunOpts(ctx)
	err := s.sess.RunWithOptions(values[:nIn], outValues, ro.options())
	if err != nil && prealloc && ctx.Err() == nil {
		// The model's declared output shapes may be wrong: try once more
		// without preallocated outputs, and stop preallocating if that works.
		clear(out)
		destroyAll(outValues)
		clear(outValues)
		if err = s.sess.RunWithOptions(values[:nIn], outValues, ro.options()); err == nil {
			s.noPrealloc.Store(true)
		}
	}
	s.releaseRunOpts(ro)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("onnxrt: run stopped: %w", ctxErr)
		}
		return nil, fmt.Errorf("onnxrt: run: %w", err)
	}

	for i, v := range outValues {
		var err error
		switch {
		case out[i].Shape == nil: // allocated by ONNX Runtime
			err = readValue(v, &out[i])
		case len(out[i].Shape) == 0: // a preallocated scalar
			err = readScalar(v, &out[i])
		}
		if err != nil {
			return nil, fmt.Errorf("onnxrt: output %q: %w", s.outputs[i].Name, err)
		}
		out[i].Name = s.outputs[i].Name
	}
	return out, nil
}

// Close releases the session after the Runs in flight finish. Later Runs
// return ErrClosed; closing twice is a no-op.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for {
		select {
		case r := <-s.freeRunOpts:
			_ = r.ro.Destroy()
		default:
			return s.sess.Destroy()
		}
	}
}

func destroyAll(values []ort.Value) {
	for _, v := range values {
		if v != nil {
			_ = v.Destroy()
		}
	}
}

// newValue wraps t's data slice, without copying it (strings excepted), in
// an ONNX Runtime tensor.
func newValue(t *Tensor) (ort.Value, error) {
	shape := ort.Shape(t.Shape)
	if len(shape) == 0 {
		return newScalar(t)
	}
	switch {
	case t.Float32 != nil:
		return ort.NewTensor(shape, t.Float32)
	case t.Float64 != nil:
		return ort.NewTensor(shape, t.Float64)
	case t.Int64 != nil:
		return ort.NewTensor(shape, t.Int64)
	case t.Int32 != nil:
		return ort.NewTensor(shape, t.Int32)
	case t.Int8 != nil:
		return ort.NewTensor(shape, t.Int8)
	case t.Uint8 != nil:
		return ort.NewTensor(shape, t.Uint8)
	case t.Bool != nil:
		return ort.NewTensor(shape, t.Bool)
	case t.Strings != nil:
		st, err := ort.NewStringTensor(shape)
		if err != nil {
			return nil, err
		}
		if err := st.SetContents(t.Strings); err != nil {
			_ = st.Destroy()
			return nil, err
		}
		return st, nil
	}
	return nil, fmt.Errorf("no data")
}

// newScalar wraps a rank-0 input (the binding's tensors need a dimension).
func newScalar(t *Tensor) (ort.Value, error) {
	switch {
	case t.Float32 != nil:
		return ort.NewScalar(t.Float32[0])
	case t.Float64 != nil:
		return ort.NewScalar(t.Float64[0])
	case t.Int64 != nil:
		return ort.NewScalar(t.Int64[0])
	case t.Int32 != nil:
		return ort.NewScalar(t.Int32[0])
	case t.Int8 != nil:
		return ort.NewScalar(t.Int8[0])
	case t.Uint8 != nil:
		return ort.NewScalar(t.Uint8[0])
	case t.Bool != nil:
		return ort.NewScalar(t.Bool[0])
	}
	return nil, fmt.Errorf("%w: a rank-0 %s input", ErrUnsupported, t.ElementType())
}

// readScalar reads a preallocated rank-0 output.
func readScalar(v ort.Value, t *Tensor) error {
	switch x := v.(type) {
	case *ort.Scalar[float32]:
		t.Float32 = []float32{x.GetData()}
	case *ort.Scalar[float64]:
		t.Float64 = []float64{x.GetData()}
	case *ort.Scalar[int64]:
		t.Int64 = []int64{x.GetData()}
	case *ort.Scalar[int32]:
		t.Int32 = []int32{x.GetData()}
	case *ort.Scalar[int8]:
		t.Int8 = []int8{x.GetData()}
	case *ort.Scalar[uint8]:
		t.Uint8 = []uint8{x.GetData()}
	case *ort.Scalar[bool]:
		t.Bool = []bool{x.GetData()}
	default:
		return fmt.Errorf("%w: a %T", ErrUnsupported, v)
	}
	return nil
}

// newOutput allocates a numeric output tensor in Go memory for ONNX Runtime
// to write into, and sets it as t's data (a scalar's is read after the Run,
// by readScalar).
func newOutput(typ ElementType, shape []int64, t *Tensor) (ort.Value, error) {
	t.Shape = shape
	if len(shape) == 0 {
		switch typ {
		case Float32:
			return ort.NewEmptyScalar[float32]()
		case Float64:
			return ort.NewEmptyScalar[float64]()
		case Int64:
			return ort.NewEmptyScalar[int64]()
		case Int32:
			return ort.NewEmptyScalar[int32]()
		case Int8:
			return ort.NewEmptyScalar[int8]()
		case Uint8:
			return ort.NewEmptyScalar[uint8]()
		case Bool:
			return ort.NewEmptyScalar[bool]()
		}
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	switch typ {
	case Float32:
		t.Float32 = make([]float32, n)
		return ort.NewTensor(shape, t.Float32)
	case Float64:
		t.Float64 = make([]float64, n)
		return ort.NewTensor(shape, t.Float64)
	case Int64:
		t.Int64 = make([]int64, n)
		return ort.NewTensor(shape, t.Int64)
	case Int32:
		t.Int32 = make([]int32, n)
		return ort.NewTensor(shape, t.Int32)
	case Int8:
		t.Int8 = make([]int8, n)
		return ort.NewTensor(shape, t.Int8)
	case Uint8:
		t.Uint8 = make([]uint8, n)
		return ort.NewTensor(shape, t.Uint8)
	case Bool:
		t.Bool = make([]bool, n)
		return ort.NewTensor(shape, t.Bool)
	}
	return nil, fmt.Errorf("%w: cannot preallocate %s", ErrUnsupported, typ)
}

// readValue converts an output ONNX Runtime allocated into t. The numeric
// data was already copied into Go memory by the binding; t takes that slice.
func readValue(v ort.Value, t *Tensor) error {
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		t.Float32 = x.GetData()
	case *ort.Tensor[float64]:
		t.Float64 = x.GetData()
	case *ort.Tensor[int64]:
		t.Int64 = x.GetData()
	case *ort.Tensor[int32]:
		t.Int32 = x.GetData()
	case *ort.Tensor[int8]:
		t.Int8 = x.GetData()
	case *ort.Tensor[uint8]:
		t.Uint8 = x.GetData()
	case *ort.Tensor[bool]:
		t.Bool = x.GetData()
	case *ort.StringTensor:
		s, err := x.GetContents()
		if err != nil {
			return err
		}
		t.Strings = s
	case *ort.Sequence:
		maps, err := readMaps(x)
		if err != nil {
			return err
		}
		t.Maps = maps
		t.Shape = []int64{int64(len(maps))}
		return nil
	case nil:
		return fmt.Errorf("ONNX Runtime returned no value")
	default:
		return fmt.Errorf("%w: a %T", ErrUnsupported, v)
	}
	t.Shape = v.GetShape()
	return nil
}

// readMaps converts a sequence<map<int64|string,float32>> (a ZipMap output).
func readMaps(seq *ort.Sequence) ([]map[string]float32, error) {
	elems, err := seq.GetValues()
	if err != nil {
		return nil, err
	}
	maps := make([]map[string]float32, len(elems))
	for i, e := range elems {
		m, ok := e.(*ort.Map)
		if !ok {
			return nil, fmt.Errorf("%w: element %d of the sequence is a %T, not a map", ErrUnsupported, i, e)
		}
		keys, vals, err := m.GetKeysAndValues()
		if err != nil {
			return nil, err
		}
		probs, ok := vals.(*ort.Tensor[float32])
		if !ok {
			return nil, fmt.Errorf("%w: map values are a %T, not float32", ErrUnsupported, vals)
		}
		p := probs.GetData()
		var labels []string
		switch k := keys.(type) {
		case *ort.StringTensor:
			if labels, err = k.GetContents(); err != nil {
				return nil, err
			}
		case *ort.Tensor[int64]:
			labels = make([]string, len(k.GetData()))
			for j, id := range k.GetData() {
				labels[j] = strconv.FormatInt(id, 10)
			}
		default:
			return nil, fmt.Errorf("%w: map keys are a %T, not int64 or string", ErrUnsupported, keys)
		}
		if len(labels) != len(p) {
			return nil, fmt.Errorf("map %d has %d keys but %d values", i, len(labels), len(p))
		}
		row := make(map[string]float32, len(p))
		for j, l := range labels {
			row[l] = p[j]
		}
		maps[i] = row
	}
	return maps, nil
}

// runOpts is an ONNX Runtime RunOptions whose terminate flag follows a
// context. Only Runs with a cancellable context use one.
type runOpts struct {
	ro       *ort.RunOptions
	stop     func() bool
	mu       sync.Mutex
	finished bool // the Run is over: the terminate callback must not touch ro
}

func (r *runOpts) options() *ort.RunOptions {
	if r == nil {
		return nil
	}
	return r.ro
}

func (r *runOpts) terminate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finished {
		_ = r.ro.Terminate()
	}
}

// acquireRunOpts returns RunOptions set to terminate when ctx is done, or
// nil when ctx can never be (then Run is not interruptible, and needs not be).
func (s *Session) acquireRunOpts(ctx context.Context) *runOpts {
	if ctx.Done() == nil {
		return nil
	}
	var r *runOpts
	select {
	case r = <-s.freeRunOpts:
		r.finished = false
	default:
		ro, err := ort.NewRunOptions()
		if err != nil {
			return nil // run without cancellation rather than fail
		}
		r = &runOpts{ro: ro}
	}
	r.stop = context.AfterFunc(ctx, r.terminate)
	return r
}

// releaseRunOpts keeps r for reuse when its callback never ran; otherwise it
// fences the callback off and frees r.
func (s *Session) releaseRunOpts(r *runOpts) {
	if r == nil {
		return
	}
	if r.stop() {
		select {
		case s.freeRunOpts <- r:
			return
		default:
		}
	} else {
		r.mu.Lock()
		r.finished = true
		r.mu.Unlock()
	}
	_ = r.ro.Destroy()
}
