package registry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/registry"
)

var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

func openRegistry(t *testing.T) (*registry.Store, *offline.Store) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "reg_" + hex.EncodeToString(b)
	store, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = store.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		store.Close()
	})
	r, err := registry.New(ctx, store.Conn(), db, registry.InspectONNX, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return r, store
}

const zipmapSpec = `name: classifier
task: generic
inputs:
  - name: input
    elements:
      - {request: a}
      - {request: b}
      - {request: c}
      - {request: d}
outputs:
  - name: output_probability
    labels: [a, b, c]
`

// TestArtifactsRoundTripAndCorruptionIsCaught stores a model, reads it
// back exactly, and refuses it once its stored bytes are altered in
// ClickHouse.
func TestArtifactsRoundTripAndCorruptionIsCaught(t *testing.T) {
	ctx := context.Background()
	r, store := openRegistry(t)
	model, err := os.ReadFile(filepath.Join("..", "serving", "testdata", "models", "zipmap_classifier.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	v, existing, err := r.Register(ctx, "model.yaml", []byte(zipmapSpec), model, repo(t), "test")
	if err != nil || existing {
		t.Fatalf("register: %v (existing %v)", err, existing)
	}
	got, err := r.Artifact(ctx, v)
	if err != nil || string(got) != string(model) {
		t.Fatalf("artifact: %v (%d bytes, want %d)", err, len(got), len(model))
	}
	if err := store.Conn().Exec(ctx, "ALTER TABLE "+store.Database()+".model_artifacts UPDATE data = concat(data, 'x') WHERE chunk = 0"); err != nil {
		t.Fatal(err)
	}
	// Mutations apply in the background; wait until it shows.
	for i := 0; ; i++ {
		_, err = r.Artifact(ctx, v)
		if err != nil || i > 100 {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("a corrupted artifact gave %v, want an error saying it is corrupt", err)
	}
}

// TestConcurrentRegistrationsNumberVersionsOnce registers different
// metadata over the same model from many goroutines: every version number
// is given once.
func TestConcurrentRegistrationsNumberVersionsOnce(t *testing.T) {
	ctx := context.Background()
	r, _ := openRegistry(t)
	model, err := os.ReadFile(filepath.Join("..", "serving", "testdata", "models", "zipmap_classifier.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	versions := make([]int64, 8)
	errs := make([]error, 8)
	for i := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := strings.Replace(zipmapSpec, "task: generic", "task: generic\ndescription: run "+string(rune('a'+i)), 1)
			v, _, err := r.Register(ctx, "model.yaml", []byte(spec), model, repo(t), "test")
			if err == nil {
				versions[i] = v.Version
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, v := range versions {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[v] {
			t.Fatalf("version %d given twice: %v", v, versions)
		}
		seen[v] = true
	}
	if _, err := r.Resolve(ctx, "classifier:9"); !errors.As(err, new(*registry.NotFoundError)) {
		t.Errorf("classifier:9: %v, want not found", err)
	}
	if v, err := r.Resolve(ctx, "classifier"); err != nil || v.Version != 8 {
		t.Errorf("classifier resolves to %v (%v), want the latest, 8", v, err)
	}
}
