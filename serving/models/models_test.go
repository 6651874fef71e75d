package models_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/onnxrt"
)

const spec = `name: m
inputs:
  - name: features
    elements: [%s]
outputs:
  - name: probabilities
    labels: [p1, p2, p3, p4, p5, p6, p7, p8]
`

// fakeRegistry serves versions of one model from memory: the alias is
// moved by the test; a version can be made to fail to load.
type fakeRegistry struct {
	mu       sync.Mutex
	model    []byte
	alias    int64
	broken   map[int64]bool
	versions map[int64]*registry.Version
}

func (f *fakeRegistry) Resolve(_ context.Context, ref string) (*registry.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.alias
	if _, v, ok := strings.Cut(ref, ":"); ok {
		fmt.Sscan(v, &n)
	}
	v, ok := f.versions[n]
	if !ok {
		return nil, &registry.NotFoundError{What: ref}
	}
	return v, nil
}

func (f *fakeRegistry) Artifact(_ context.Context, v *registry.Version) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken[v.Version] {
		return nil, errors.New("artifact of m is corrupt: sha256 mismatch")
	}
	return f.model, nil
}

func (f *fakeRegistry) moveAlias(n int64) {
	f.mu.Lock()
	f.alias = n
	f.mu.Unlock()
}

func newRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	model, err := os.ReadFile(filepath.Join("..", "testdata", "models", "next_product.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	elems := make([]string, 12)
	for i := range elems {
		elems[i] = fmt.Sprintf("{request: r%d}", i)
	}
	s, err := registry.ParseSpec("m.yaml", []byte(fmt.Sprintf(spec, strings.Join(elems, ", "))))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistry{model: model, alias: 1, broken: map[int64]bool{}, versions: map[int64]*registry.Version{}}
	for n := int64(1); n <= 3; n++ {
		f.versions[n] = &registry.Version{Name: "m", Version: n, Spec: s}
	}
	return f
}

func run(t *testing.T, m *models.Model) error {
	t.Helper()
	_, err := m.Session.Run(context.Background(), models.ToRuntime(m.Plan.Fill([]assemble.Row{{}})))
	return err
}

// TestSwap moves an alias: to a version that fails to load (the old one
// keeps serving, the failure is counted), then to a good one (served next;
// the old version closes only once the request holding it is done).
func TestSwap(t *testing.T) {
	if err := onnxrt.Init(""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reg := newRegistry(t)
	mgr := models.New(reg, func() *definitions.Repo { return &definitions.Repo{} }, models.Options{Refresh: time.Hour})
	promReg := prometheus.NewRegistry()
	if err := mgr.Register(promReg); err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()

	v1, release1, err := mgr.Get(ctx, "m@champion")
	if err != nil || v1.Version.Version != 1 {
		t.Fatalf("get: %v %v", v1, err)
	}
	// A request keeps holding version 1 across the swaps.
	reg.broken[2] = true
	reg.moveAlias(2)
	mgr.Refresh(ctx)
	m, release, err := mgr.Get(ctx, "m@champion")
	if err != nil || m.Version.Version != 1 {
		t.Fatalf("after a failed load: %v %v, want version 1 still serving", m, err)
	}
	release()
	if n := loadErrors(t, promReg); n != 1 {
		t.Errorf("load errors counted %v, want 1", n)
	}
	// The failed version is not retried every refresh.
	mgr.Refresh(ctx)
	if n := loadErrors(t, promReg); n != 1 {
		t.Errorf("load errors counted %v after a second refresh, want still 1", n)
	}

	reg.moveAlias(3)
	mgr.Refresh(ctx)
	m3, release3, err := mgr.Get(ctx, "m@champion")
	if err != nil || m3.Version.Version != 3 {
		t.Fatalf("after the move to 3: %v %v", m3, err)
	}
	release3()
	// Version 1 is retired but still held: it must still run.
	if err := run(t, v1); err != nil {
		t.Fatalf("a request holding the old version failed: %v", err)
	}
	release1()
	deadline := time.Now().Add(5 * time.Second)
	for run(t, v1) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the retired version was never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := run(t, v1); !errors.Is(err, onnxrt.ErrClosed) {
		t.Fatalf("retired version: %v, want ErrClosed", err)
	}
	// A fixed reference does not move.
	fixed, releaseFixed, err := mgr.Get(ctx, "m:1")
	if err != nil || fixed.Version.Version != 1 {
		t.Fatalf("m:1: %v %v", fixed, err)
	}
	releaseFixed()
	if _, _, err := mgr.Get(ctx, "m:7"); !models.IsNotFound(err) {
		t.Fatalf("m:7: %v, want not found", err)
	}
}

// loadErrors reads tailor_model_loads_total{model="m",result="error"}.
func loadErrors(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tailor_model_loads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == "m" && labels["result"] == "error" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
