// Package benchmarks measures tailor end to end against floors measured in
// the same run: clickhouse-client loading the same CSV, a raw ClickHouse scan
// of the same columns. Run with `make bench`.
package benchmarks

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/chserver"
)

// env is the shared world of the benchmarks: one private ClickHouse and a
// freshly built tailor binary, started on first use.
type env struct {
	dir    string
	srv    *chserver.Server
	tailor string
	client string
}

var (
	envOnce sync.Once
	shared  *env
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.srv.Stop(context.Background())
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func setup(b *testing.B) *env {
	b.Helper()
	envOnce.Do(func() {
		e := &env{}
		if e.dir, envErr = os.MkdirTemp("", "tailor-bench-"); envErr != nil {
			return
		}
		e.tailor = filepath.Join(e.dir, "tailor")
		build := exec.Command("go", "build", "-o", e.tailor, "github.com/tailorhq/tailor/cmd/tailor")
		if out, err := build.CombinedOutput(); err != nil {
			envErr = fmt.Errorf("build tailor: %v\n%s", err, out)
			return
		}
		if e.client, envErr = exec.LookPath("clickhouse-client"); envErr != nil {
			return
		}
		e.srv, envErr = chserver.Start(context.Background(), chserver.Options{Dir: filepath.Join(e.dir, "ch")})
		shared = e
	})
	if envErr != nil {
		b.Fatal(envErr)
	}
	return shared
}

// sql runs statements with clickhouse-client and returns its output.
func (e *env) sql(b *testing.B, q string, stdin ...string) string {
	b.Helper()
	port := e.srv.TCPAddr()[strings.LastIndex(e.srv.TCPAddr(), ":")+1:]
	cmd := exec.Command(e.client, "--port", port, "--multiquery", "--query", q)
	if len(stdin) > 0 {
		f, err := os.Open(stdin[0])
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		b.Fatalf("clickhouse-client %q: %v\n%s", q, err, errb.String())
	}
	return out.String()
}

// run is one finished process: its wall time and peak resident memory.
type run struct {
	wall    time.Duration
	peakRSS int64 // bytes
	out     string
}

// tailorRun runs the tailor binary against the benchmark ClickHouse.
func (e *env) tailorRun(b *testing.B, args ...string) run {
	b.Helper()
	args = append([]string{"--clickhouse", e.srv.DSN(), "--database", "bench"}, args...)
	cmd := exec.Command(e.tailor, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("tailor %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	r := run{wall: time.Since(start), out: out.String()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.peakRSS = ru.Maxrss * 1024 // Linux reports KiB
	}
	return r
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// machine describes where the figures were measured.
func machine() string {
	return fmt.Sprintf("%s/%s, %d cores", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
}
