// Package benchmarks measures tailor end to end against floors measured in
// the same run: clickhouse-client loading the same CSV, a raw ClickHouse scan
// of the same columns. Run with `make bench`.
package benchmarks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	"github.com/tailorhq/tailor/featurestore/chserver"
)

// env is the shared world of the benchmarks: one private ClickHouse and a
// freshly built tailor binary, started on first use.
type env struct {
	dir    string
	srv    *chserver.Server
	tailor string
	client string
	// pitLoaded: the point-in-time data is in bench (see loadPIT).
	pitLoaded bool
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
	var out bytes.Buffer
	e.client1(b, q, &out, stdin...)
	return out.String()
}

// sqlToFile runs a query with clickhouse-client writing its output to path,
// so large generated files never pass through the benchmark's memory.
func (e *env) sqlToFile(b *testing.B, q, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	e.client1(b, q, f)
}

func (e *env) client1(b *testing.B, q string, out io.Writer, stdin ...string) {
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
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &errb
	if err := cmd.Run(); err != nil {
		b.Fatalf("clickhouse-client %q: %v\n%s", q, err, errb.String())
	}
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
	if err := cmd.Start(); err != nil {
		b.Fatalf("tailor %s: %v", strings.Join(args, " "), err)
	}
	// The kernel's maxrss of a child starts from its parent's high-water
	// mark, so it cannot measure tailor; VmHWM of the running process can.
	hwm := make(chan int64, 1)
	stop := make(chan struct{})
	go func() { hwm <- pollHWM(cmd.Process.Pid, stop) }()
	err := cmd.Wait()
	close(stop)
	r := run{wall: time.Since(start), out: out.String(), peakRSS: <-hwm}
	if err != nil {
		b.Fatalf("tailor %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return r
}

// pollHWM reads the peak resident set (VmHWM) of pid every 10ms until stop
// closes, and returns the last value seen, in bytes.
func pollHWM(pid int, stop <-chan struct{}) int64 {
	var last int64
	path := fmt.Sprintf("/proc/%d/status", pid)
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kb int64
					fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
					if kb > 0 {
						last = kb * 1024
					}
				}
			}
		}
		select {
		case <-stop:
			return last
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// machine describes where the figures were measured.
// record adds a figure of the running benchmark to the report
// (benchmarks/RESULTS.md, written by make bench).
func record(b *testing.B, r benchrec.Result) {
	b.Helper()
	r.Benchmark = b.Name()
	if err := benchrec.Record(r); err != nil {
		b.Logf("record the figure: %v", err)
	}
}

// answered is a latency sample without its failed requests.
func answered(lat []time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(lat))
	for _, d := range lat {
		if d != failed {
			out = append(out, d)
		}
	}
	return out
}

// ratioText formats a ratio.
func ratioText(r float64) string { return fmt.Sprintf("%.2fx", r) }

func machine() string { return benchrec.Machine() }
