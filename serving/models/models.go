// Package models keeps registered models loaded and ready to run: a model
// reference (name, name@alias, name:version) is resolved and loaded on
// first use, and references that can move (aliases, bare names) are
// re-resolved in the background. A new version is loaded and warmed before
// it takes traffic; requests in flight finish on the version they started
// with, which is closed after the last of them; a version that fails to
// load leaves the old one serving.
package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/batcher"
	"github.com/tailorhq/tailor/serving/onnxrt"
)

// Registry is what the manager needs of the model registry.
type Registry interface {
	Resolve(ctx context.Context, ref string) (*registry.Version, error)
	Artifact(ctx context.Context, v *registry.Version) ([]byte, error)
}

// Model is one loaded version.
type Model struct {
	Version *registry.Version
	Plan    *assemble.Plan
	Session *onnxrt.Session
	// batch runs requests through the dynamic batcher.
	batch *batcher.Batcher

	// use is held shared by each request running the model and
	// exclusively by Close, which so waits for them.
	use    sync.RWMutex
	closed bool
}

// acquire takes the model for one request; false once it is closed.
func (m *Model) acquire() bool {
	m.use.RLock()
	if m.closed {
		m.use.RUnlock()
		return false
	}
	return true
}

func (m *Model) release() { m.use.RUnlock() }

func (m *Model) close() {
	m.use.Lock()
	defer m.use.Unlock()
	if !m.closed {
		m.closed = true
		m.batch.Close()
		m.Session.Close()
	}
}

// Run runs the model for one request's inputs, batched with other
// requests' when the model's serving settings allow.
func (m *Model) Run(ctx context.Context, inputs []onnxrt.Tensor) ([]onnxrt.Tensor, error) {
	return m.batch.Run(ctx, inputs)
}

// BatchStats reports the model's dynamic batching.
func (m *Model) BatchStats() batcher.Stats { return m.batch.Stats() }

// Options configures a Manager.
type Options struct {
	// Session is the default ONNX Runtime configuration of a model whose
	// metadata sets no threads.
	Session onnxrt.SessionOptions
	// MaxBatch and MaxQueueDelay are the dynamic batching defaults of a
	// model whose metadata does not set them (MaxBatch 1: off).
	MaxBatch      int
	MaxQueueDelay time.Duration
	// Refresh is how often moving references are re-resolved (default
	// 1s, so an alias move is served within about that).
	Refresh time.Duration
	Logger  *slog.Logger
}

// Manager loads and swaps models.
type Manager struct {
	reg  Registry
	defs func() *definitions.Repo
	opt  Options

	mu       sync.Mutex
	refs     map[string]*binding // reference -> what it serves now
	versions map[string]*Model   // "name:version" -> loaded model
	loading  map[string]*loadCall

	loads *prometheus.CounterVec
	swaps *prometheus.CounterVec
}

// binding is a reference and the model it serves.
type binding struct {
	model *Model
	// fixed: a name:version reference never moves.
	fixed bool
	// failing is the version that last failed to load, so it is not
	// retried every refresh.
	failing string
}

type loadCall struct {
	done  chan struct{}
	model *Model
	err   error
}

// New returns a manager loading from reg, compiling inputs against the
// definitions defs returns.
func New(reg Registry, defs func() *definitions.Repo, opt Options) *Manager {
	if opt.Refresh <= 0 {
		opt.Refresh = time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Manager{
		reg: reg, defs: defs, opt: opt,
		refs: map[string]*binding{}, versions: map[string]*Model{}, loading: map[string]*loadCall{},
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailor_model_loads_total", Help: "Model versions loaded into ONNX Runtime, by model and result.",
		}, []string{"model", "result"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailor_model_swaps_total", Help: "References moved to another version while serving, by reference.",
		}, []string{"reference"}),
	}
}

// Register exports the manager's metrics.
func (m *Manager) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.loads, m.swaps} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the model a reference serves now, loading it on first use,
// and a release to call when the request is done with it.
func (m *Manager) Get(ctx context.Context, ref string) (*Model, func(), error) {
	for range 3 {
		m.mu.Lock()
		b := m.refs[ref]
		m.mu.Unlock()
		if b == nil {
			v, err := m.reg.Resolve(ctx, ref)
			if err != nil {
				return nil, nil, err
			}
			model, err := m.load(ctx, v)
			if err != nil {
				return nil, nil, err
			}
			m.mu.Lock()
			if m.refs[ref] == nil {
				m.refs[ref] = &binding{model: model, fixed: strings.Contains(ref, ":") && !strings.Contains(ref, "@")}
			}
			b = m.refs[ref]
			m.mu.Unlock()
		}
		m.mu.Lock()
		model := b.model
		m.mu.Unlock()
		if model.acquire() {
			return model, model.release, nil
		}
		// Swapped and closed between the lookup and acquire: look again.
	}
	return nil, nil, fmt.Errorf("model %s: it kept being replaced while loading; retry", ref)
}

// load returns the loaded model of a version, loading it once however many
// ask at the same time.
func (m *Manager) load(ctx context.Context, v *registry.Version) (*Model, error) {
	key := fmt.Sprintf("%s:%d", v.Name, v.Version)
	m.mu.Lock()
	if model, ok := m.versions[key]; ok {
		m.mu.Unlock()
		return model, nil
	}
	if c, ok := m.loading[key]; ok {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.model, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &loadCall{done: make(chan struct{})}
	m.loading[key] = c
	m.mu.Unlock()

	// The load outlives a cancelled request: others may wait for it.
	c.model, c.err = m.open(context.WithoutCancel(ctx), v)
	m.mu.Lock()
	delete(m.loading, key)
	if c.err == nil {
		m.versions[key] = c.model
	}
	m.mu.Unlock()
	close(c.done)
	result := "ok"
	if c.err != nil {
		result = "error"
	}
	m.loads.WithLabelValues(v.Name, result).Inc()
	return c.model, c.err
}

// open loads a version's artifact into ONNX Runtime, compiles its inputs
// and warms it with one run.
func (m *Manager) open(ctx context.Context, v *registry.Version) (*Model, error) {
	start := time.Now()
	plan, err := assemble.Compile(v.Spec, m.defs())
	if err != nil {
		return nil, &LoadError{Ref: fmt.Sprintf("%s:%d", v.Name, v.Version), Err: err}
	}
	b, err := m.reg.Artifact(ctx, v)
	if err != nil {
		return nil, &LoadError{Ref: fmt.Sprintf("%s:%d", v.Name, v.Version), Err: err}
	}
	if err := onnxrt.Init(""); err != nil {
		return nil, &LoadError{Ref: fmt.Sprintf("%s:%d", v.Name, v.Version), Err: err}
	}
	so, maxBatch, delay := m.opt.Session, m.opt.MaxBatch, m.opt.MaxQueueDelay
	if sv := v.Spec.Serving; sv.IntraOpThreads > 0 || sv.InterOpThreads > 0 {
		so = onnxrt.SessionOptions{IntraOpThreads: sv.IntraOpThreads, InterOpThreads: sv.InterOpThreads}
	}
	if v.Spec.Serving.MaxBatch > 0 {
		maxBatch = v.Spec.Serving.MaxBatch
	}
	if v.Spec.Serving.MaxQueueDelay > 0 {
		delay = v.Spec.Serving.MaxQueueDelay
	}
	sess, err := onnxrt.NewSession(b, so)
	if err != nil {
		return nil, &LoadError{Ref: fmt.Sprintf("%s:%d", v.Name, v.Version), Err: err}
	}
	bo := batcher.Options{MaxBatch: maxBatch, MaxDelay: delay}
	if maxBatch <= 1 {
		// Unbatched requests run side by side: ONNX Runtime's Run is
		// thread-safe.
		bo.Workers, bo.MaxQueue = unbatchedRuns, 64*unbatchedRuns
	}
	if n := v.Spec.Serving.Instances; n > 0 {
		bo.Workers = n
	}
	model := &Model{Version: v, Plan: plan, Session: sess, batch: batcher.New(sess.Run, bo)}
	// One run with default values warms the session before traffic.
	if _, err := sess.Run(ctx, ToRuntime(plan.Fill([]assemble.Row{{}}))); err != nil {
		model.batch.Close()
		sess.Close()
		return nil, &LoadError{Ref: fmt.Sprintf("%s:%d", v.Name, v.Version), Err: fmt.Errorf("warm-up run: %w", err)}
	}
	m.opt.Logger.Info("model loaded", "model", v.Name, "version", v.Version, "took", time.Since(start))
	return model, nil
}

// unbatchedRuns is how many unbatched runs of one model go at once.
const unbatchedRuns = 64

// LoadError is a version that could not be made ready to serve.
type LoadError struct {
	Ref string
	Err error
}

func (e *LoadError) Error() string { return fmt.Sprintf("load model %s: %v", e.Ref, e.Err) }
func (e *LoadError) Unwrap() error { return e.Err }

// FailedPrecondition classifies the error: the version exists but cannot
// be served (see featurestore/rpcerr).
func (e *LoadError) FailedPrecondition() bool { return true }

// Watch re-resolves moving references every Refresh until ctx is done.
func (m *Manager) Watch(ctx context.Context) {
	t := time.NewTicker(m.opt.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.Refresh(ctx)
	}
}

// Refresh re-resolves every moving reference once and swaps those that
// now name another version, after loading and warming it. A reference to
// a version by number stops being served once that version is archived
// (or gone): the next request resolves it again and hears why.
func (m *Manager) Refresh(ctx context.Context) {
	m.mu.Lock()
	var refs []string
	for ref := range m.refs {
		refs = append(refs, ref)
	}
	m.mu.Unlock()
	for _, ref := range refs {
		v, err := m.reg.Resolve(ctx, ref)
		var archived *registry.ArchivedError
		if errors.As(err, &archived) || IsNotFound(err) {
			m.unbind(ref)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				m.opt.Logger.Warn("re-resolve model reference", "reference", ref, "err", err)
			}
			continue
		}
		m.mu.Lock()
		b := m.refs[ref]
		if b == nil || b.fixed {
			m.mu.Unlock()
			continue
		}
		cur := b.model.Version
		key := fmt.Sprintf("%s:%d", v.Name, v.Version)
		skip := cur.Version == v.Version && cur.Name == v.Name || b.failing == key
		m.mu.Unlock()
		if skip {
			continue
		}
		next, err := m.load(ctx, v)
		if err != nil {
			m.mu.Lock()
			b.failing = key
			m.mu.Unlock()
			m.opt.Logger.Error("new model version failed to load; the old one keeps serving", "reference", ref, "version", v.Version, "serving", cur.Version, "err", err)
			continue
		}
		m.mu.Lock()
		old := b.model
		b.model, b.failing = next, ""
		m.mu.Unlock()
		m.swaps.WithLabelValues(ref).Inc()
		m.opt.Logger.Info("model reference moved", "reference", ref, "from", old.Version.Version, "to", next.Version.Version)
		m.retire(old)
	}
}

// unbind stops serving ref, which names nothing servable any more.
func (m *Manager) unbind(ref string) {
	m.mu.Lock()
	b := m.refs[ref]
	delete(m.refs, ref)
	m.mu.Unlock()
	if b != nil {
		m.opt.Logger.Info("model reference no longer served", "reference", ref, "version", b.model.Version.Version)
		m.retire(b.model)
	}
}

// retire closes a model no reference serves any more, once its requests in
// flight are done.
func (m *Manager) retire(model *Model) {
	m.mu.Lock()
	for _, b := range m.refs {
		if b.model == model {
			m.mu.Unlock()
			return
		}
	}
	delete(m.versions, fmt.Sprintf("%s:%d", model.Version.Name, model.Version.Version))
	m.mu.Unlock()
	go model.close()
}

// Close closes every loaded model.
func (m *Manager) Close() {
	m.mu.Lock()
	models := m.versions
	m.versions = map[string]*Model{}
	m.refs = map[string]*binding{}
	m.mu.Unlock()
	for _, model := range models {
		model.close()
	}
}

// ToRuntime converts assembled tensors to ONNX Runtime's.
func ToRuntime(ts []assemble.Tensor) []onnxrt.Tensor {
	out := make([]onnxrt.Tensor, len(ts))
	for i, t := range ts {
		out[i] = onnxrt.Tensor{Name: t.Name, Shape: t.Shape, Float32: t.Float32, Float64: t.Float64, Int64: t.Int64, Int32: t.Int32}
	}
	return out
}

// IsNotFound reports whether err means the reference names nothing.
func IsNotFound(err error) bool {
	var nf *registry.NotFoundError
	return errors.As(err, &nf)
}
