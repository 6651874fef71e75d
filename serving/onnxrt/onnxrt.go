// Package onnxrt runs ONNX models on ONNX Runtime, through
// github.com/yalue/onnxruntime_go, with a small Go-typed API: Init loads the
// shared library once per process, Inspect describes a model's inputs and
// outputs, and a Session runs a model on named tensors held in plain Go
// slices.
//
// Inputs are checked against the model before ONNX Runtime sees them: a
// missing, unknown or duplicated input, a wrong element type or a wrong shape
// is an *InputError (errors.Is(err, ErrInvalidInput)) naming the tensor, what
// the model expects and what was given.
//
// Concurrency: ONNX Runtime documents OrtSession::Run as safe to call from
// many threads at once on one session, and the binding's Run keeps no state
// between calls, so one Session serves concurrent Runs without a pool. Runs
// share the session's intra-op thread pool (SessionOptions.IntraOpThreads).
package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// LibVersion is the ONNX Runtime release this package is built and tested
// against (the binding speaks its C API, version 24).
const LibVersion = "1.24.1"

var (
	// ErrNoLibrary means the ONNX Runtime shared library is not loaded:
	// Init was not called, or it could not load the library.
	ErrNoLibrary = errors.New("onnxrt: ONNX Runtime library not loaded")
	// ErrInvalidModel means ONNX Runtime refused the model bytes.
	ErrInvalidModel = errors.New("onnxrt: invalid model")
	// ErrUnsupported means the model is valid but has an input or output
	// this package cannot carry (see Tensor).
	ErrUnsupported = errors.New("onnxrt: unsupported model input or output")
	// ErrInvalidInput is wrapped by every *InputError.
	ErrInvalidInput = errors.New("onnxrt: invalid input")
	// ErrClosed is returned by Run on a closed Session.
	ErrClosed = errors.New("onnxrt: session closed")
)

var lib struct {
	mu   sync.Mutex
	path string // the library Init loaded; "" before
}

// DefaultLibPath is where Init looks when given no path: $ONNXRUNTIME_LIB
// when set, else $TAILOR_CACHE/onnxruntime/libonnxruntime.so.1 with
// TAILOR_CACHE defaulting to ~/.cache/tailor (where `make deps` puts it).
func DefaultLibPath() string {
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	cache := os.Getenv("TAILOR_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "~"
		}
		cache = filepath.Join(home, ".cache", "tailor")
	}
	return filepath.Join(cache, "onnxruntime", "libonnxruntime.so.1")
}

// Init loads the ONNX Runtime shared library at libPath ("" means
// DefaultLibPath) and creates the process's ONNX Runtime environment. It is
// safe to call many times and from many goroutines: once a library is loaded
// later calls return nil, unless they name a different library, which is an
// error (a process holds one ONNX Runtime). A failed Init can be retried.
func Init(libPath string) error {
	lib.mu.Lock()
	defer lib.mu.Unlock()
	path := libPath
	if path == "" {
		path = DefaultLibPath()
	}
	if ort.IsInitialized() {
		if libPath != "" && lib.path != "" && !samePath(libPath, lib.path) {
			return fmt.Errorf("onnxrt: ONNX Runtime is already loaded from %s; cannot load %s too", lib.path, libPath)
		}
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: %s: %w (run `make deps` to install ONNX Runtime %s there, or set ONNXRUNTIME_LIB)",
			ErrNoLibrary, path, err, LibVersion)
	}
	ort.SetSharedLibraryPath(path)
	// ONNX Runtime returns every error it logs as a status, which becomes
	// an error here; at a lower level it would also print them to stderr.
	if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
		return fmt.Errorf("%w: loading %s: %w (tailor needs ONNX Runtime %s, which `make deps` installs)",
			ErrNoLibrary, path, err, LibVersion)
	}
	lib.path = path
	return nil
}

// Version is the version string of the loaded ONNX Runtime ("" before Init).
func Version() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}

func samePath(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && ra == rb
}

func checkInit() error {
	if !ort.IsInitialized() {
		return fmt.Errorf("%w: call onnxrt.Init first", ErrNoLibrary)
	}
	return nil
}
