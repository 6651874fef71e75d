package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/protobuf/proto"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/serving/rpcserver"
)

// The online benchmarks run two servers as child processes, so that the
// CPU each spends can be read from /proc: `tailor serve`, and an echo
// server that is this test binary run again.
//
// echoEnv, when set, makes the test binary an echo server instead of
// running tests: it serves the FeatureService over the same rpcserver
// stack as `tailor serve`, answering every GetOnlineFeatures with a
// pre-built response of the same shape as tailor's (the response stored in
// the file echoEnv names, cut to the request's number of entity rows),
// without any lookup. The switch is an init function, not TestMain, because
// TestMain belongs to harness_test.go; init runs before TestMain and before
// the testing flags are parsed, so the echo process never touches them
// (cmd/tailor's kill test re-executes itself the same way).
const echoEnv = "TAILOR_BENCH_ECHO_RESPONSE"

func init() {
	if path := os.Getenv(echoEnv); path != "" {
		if err := serveEcho(path); err != nil {
			fmt.Fprintln(os.Stderr, "echo server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// serveEcho serves the echo FeatureService on a free loopback port, prints
// "serving on ADDR" as `tailor serve` does, and stops on SIGTERM or SIGINT.
func serveEcho(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	full := &featurestorev1.GetOnlineFeaturesResponse{}
	if err := proto.Unmarshal(raw, full); err != nil {
		return err
	}
	if len(full.GetRows()) == 0 {
		return errors.New("the response to echo has no rows")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The same stack as `tailor serve`: registry, RPC metrics interceptor,
	// request limit, rpcserver.Serve with health and reflection.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := rpcserver.NewMetrics(reg)
	path, handler := featurestorev1connect.NewFeatureServiceHandler(&echoFeatures{full: full},
		connect.WithInterceptors(metrics.Interceptor()),
		connect.WithReadMaxBytes(16<<20),
		connect.WithCompressMinBytes(1<<20)) // as tailor serve
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("serving on %s\n", ln.Addr())
	return rpcserver.Serve(ctx, ln, rpcserver.Options{
		Services: []rpcserver.Service{{Name: featurestorev1connect.FeatureServiceName, Path: path, Handler: handler}},
		Registry: reg,
		Logger:   slog.New(slog.DiscardHandler),
	})
}

// echoFeatures answers GetOnlineFeatures with the first n rows of a stored
// response (repeated cyclically past its end), n the request's entity rows.
// Each size is built once; the message is shared read-only by every answer.
type echoFeatures struct {
	featurestorev1connect.UnimplementedFeatureServiceHandler
	full   *featurestorev1.GetOnlineFeaturesResponse
	bySize sync.Map // int -> *featurestorev1.GetOnlineFeaturesResponse
}

func (f *echoFeatures) GetOnlineFeatures(_ context.Context, req *connect.Request[featurestorev1.GetOnlineFeaturesRequest]) (*connect.Response[featurestorev1.GetOnlineFeaturesResponse], error) {
	n := len(req.Msg.GetEntities())
	if resp, ok := f.bySize.Load(n); ok {
		return connect.NewResponse(resp.(*featurestorev1.GetOnlineFeaturesResponse)), nil
	}
	resp := &featurestorev1.GetOnlineFeaturesResponse{FeatureNames: f.full.GetFeatureNames()}
	for i := range n {
		resp.Rows = append(resp.Rows, f.full.GetRows()[i%len(f.full.GetRows())])
	}
	got, _ := f.bySize.LoadOrStore(n, resp)
	return connect.NewResponse(got.(*featurestorev1.GetOnlineFeaturesResponse)), nil
}

// The online data set: one view of 20 features (int64 and float64
// alternating) over 10k customers, in a database of its own so the offline
// benchmarks' definitions are left alone.
const (
	onlineDB       = "bench_online"
	onlineView     = "online20"
	onlineFeatures = 20
	onlineKeys     = 10_000
)

var (
	onlineOnce sync.Once
	onlineErr  error
)

func onlineRefs() []string {
	refs := make([]string, onlineFeatures)
	for i := range refs {
		refs[i] = fmt.Sprintf("%s:f%02d", onlineView, i)
	}
	return refs
}

func onlineKey(i int) string { return "c" + strconv.Itoa(i) }

// tailorOnline runs the tailor binary against the online benchmarks'
// database.
func (e *env) tailorOnline(args ...string) error {
	args = append([]string{"--clickhouse", e.srv.DSN(), "--database", onlineDB}, args...)
	out, err := exec.Command(e.tailor, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tailor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// loadOnline applies the online view and ingests one row per key from a
// generated CSV, once per test binary.
func (e *env) loadOnline(b *testing.B) {
	b.Helper()
	onlineOnce.Do(func() {
		dir := filepath.Join(e.dir, "online-repo")
		var defs strings.Builder
		fmt.Fprintf(&defs, "entities:\n  - {name: customer, join_key: customer_id, type: string}\nfeature_views:\n  - name: %s\n    entities: [customer]\n    ttl: 0\n    features:\n", onlineView)
		cols := []string{"concat('c', toString(number)) AS customer_id", "toDateTime(1700000000 + number) AS event_ts"}
		for i := range onlineFeatures {
			if i%2 == 0 {
				fmt.Fprintf(&defs, "      - {name: f%02d, type: int64}\n", i)
				cols = append(cols, fmt.Sprintf("toInt64(intHash64(number * %d + %d) %% 1000000000) AS f%02d", onlineFeatures, i, i))
			} else {
				fmt.Fprintf(&defs, "      - {name: f%02d, type: float64}\n", i)
				cols = append(cols, fmt.Sprintf("intHash64(number * %d + %d) %% 1000000 / 7 AS f%02d", onlineFeatures, i, i))
			}
		}
		if onlineErr = os.MkdirAll(dir, 0o755); onlineErr != nil {
			return
		}
		if onlineErr = os.WriteFile(filepath.Join(dir, "online.yaml"), []byte(defs.String()), 0o644); onlineErr != nil {
			return
		}
		if onlineErr = e.tailorOnline("apply", dir); onlineErr != nil {
			return
		}
		csv := filepath.Join(e.dir, "online.csv")
		e.sqlToFile(b, fmt.Sprintf("SELECT %s FROM numbers(%d) FORMAT CSVWithNames", strings.Join(cols, ", "), onlineKeys), csv)
		onlineErr = e.tailorOnline("ingest", onlineView, csv)
	})
	if onlineErr != nil {
		b.Fatal(onlineErr)
	}
}

// serverProc is a server running as a child process.
type serverProc struct {
	name   string
	cmd    *exec.Cmd
	base   string // http://host:port
	stderr *lockedBuffer
	exited chan error
}

// lockedBuffer collects a child's stderr while the benchmark may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startServer starts cmd, which prints "serving on ADDR" first on stdout,
// waits until its gRPC health check says SERVING, and stops it when b
// ends: SIGTERM, then SIGKILL if it has not exited within 10 s.
func startServer(b *testing.B, name string, cmd *exec.Cmd) *serverProc {
	b.Helper()
	p := &serverProc{name: name, cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	first := make(chan string, 1)
	go func() {
		lines := bufio.NewReader(out)
		line, _ := lines.ReadString('\n')
		first <- line
		_, _ = lines.WriteTo(io.Discard)
		p.exited <- cmd.Wait()
	}()
	b.Cleanup(func() { p.stop(b) })
	var line string
	select {
	case line = <-first:
	case <-time.After(60 * time.Second):
		b.Fatalf("%s printed nothing in 60 s; stderr:\n%s", name, p.stderr)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "serving on ")
	if !ok {
		b.Fatalf("%s said %q; stderr:\n%s", name, line, p.stderr)
	}
	p.base = "http://" + addr
	health := grpchealth.NewClient(h2cClient(), p.base, connect.WithGRPC())
	deadline := time.Now().Add(120 * time.Second)
	for {
		st, err := health.Check(context.Background(), &grpchealth.CheckRequest{Service: featurestorev1connect.FeatureServiceName})
		if err == nil && st.Status == grpchealth.StatusServing {
			return p
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not SERVING within 120 s: %v %v; stderr:\n%s", name, st, err, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *serverProc) stop(b *testing.B) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		b.Logf("%s did not stop within 10 s of SIGTERM; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// startTailorServe runs `tailor serve` on a free loopback port with the
// whole data set warm in its tier. Following other writers and reloading
// definitions are pushed out to an hour: their periodic ClickHouse polls
// are background work, not the request path measured here.
func (e *env) startTailorServe(b *testing.B) *serverProc {
	b.Helper()
	cmd := exec.Command(e.tailor, "--clickhouse", e.srv.DSN(), "--database", onlineDB, "serve",
		"--addr", "127.0.0.1:0", "--warm-start", "--online-memory", "256MiB", "--follow", "1h", "--reload", "1h")
	p := startServer(b, "tailor serve", cmd)
	if n := scrape(b, p.base, "tailor_online_tier_entries"); n != onlineKeys {
		b.Fatalf("warm start cached %v entries, want every key (%d)", n, onlineKeys)
	}
	return p
}

// startEcho runs the echo server answering with resp (see echoEnv).
func (e *env) startEcho(b *testing.B, resp *featurestorev1.GetOnlineFeaturesResponse) *serverProc {
	b.Helper()
	raw, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(e.dir, "echo-response.pb")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	// The garbage collector as tailor serve sets it (see tuneGC there).
	cmd.Env = append(os.Environ(), echoEnv+"="+path, "GOGC=400")
	return startServer(b, "echo server", cmd)
}

// scrape reads one unlabelled sample from a server's /metrics.
func scrape(b *testing.B, base, name string) float64 {
	b.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		b.Fatalf("metric %s not exported by %s", name, base)
	}
	f, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// h2cClient speaks cleartext HTTP/2 with prior knowledge, as gRPC clients
// do. Each call has a transport, hence a TCP connection, of its own.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 30 * time.Second}
}

// clientPool returns n FeatureService clients (Connect protocol, binary
// protobuf), each on its own h2c connection.
func clientPool(base string, n int, opts ...connect.ClientOption) []featurestorev1connect.FeatureServiceClient {
	cs := make([]featurestorev1connect.FeatureServiceClient, n)
	for i := range cs {
		cs[i] = featurestorev1connect.NewFeatureServiceClient(h2cClient(), base, opts...)
	}
	return cs
}

// onlineRequests builds count requests of rows random keys each, for the
// 20 features.
func onlineRequests(rng *rand.Rand, count, rows int) []*featurestorev1.GetOnlineFeaturesRequest {
	refs := onlineRefs()
	reqs := make([]*featurestorev1.GetOnlineFeaturesRequest, count)
	for i := range reqs {
		req := &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: refs}}}
		for range rows {
			req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{
				"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: onlineKey(rng.IntN(onlineKeys))}},
			}})
		}
		reqs[i] = req
	}
	return reqs
}

// checkAnswer fails b unless resp answers req with every feature PRESENT.
func checkAnswer(b *testing.B, req *featurestorev1.GetOnlineFeaturesRequest, resp *featurestorev1.GetOnlineFeaturesResponse) {
	b.Helper()
	if len(resp.GetRows()) != len(req.GetEntities()) || len(resp.GetFeatureNames()) != onlineFeatures {
		b.Fatalf("%d rows of %d features for %d entity rows", len(resp.GetRows()), len(resp.GetFeatureNames()), len(req.GetEntities()))
	}
	for i, row := range resp.GetRows() {
		for j, v := range row.GetValues() {
			if v.GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT || v.GetValue() == nil {
				b.Fatalf("row %d feature %d: %v", i, j, v)
			}
		}
	}
}

// clockTicks is the unit of utime and stime in /proc/PID/stat
// (sysconf(_SC_CLK_TCK)), read with getconf; Linux fixes it (USER_HZ) at
// 100 on every common architecture, which is the fallback.
var clockTicks = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
})

// cpuTime is the CPU time (user + system, all threads) pid has used.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields follow "pid (comm) "; comm may hold spaces and parentheses.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(float64(utime+stime) / clockTicks() * float64(time.Second))
}

// clientAllocs measures the benchmark process's own allocations during f.
func clientAllocs(f func()) (bytes, allocs uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, after.Mallocs - before.Mallocs
}

// failed marks a request that got no valid answer in a latency sample; it
// sorts after every real latency.
const failed = time.Duration(math.MaxInt64)

// percentile returns the nearest-rank q-quantile of sorted latencies.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 {
	if d == failed {
		return math.Inf(1)
	}
	return float64(d) / float64(time.Microsecond)
}

// sleepUntil sleeps until t with nanosleep(2) on the caller's thread:
// time.Sleep rounds short waits up to the runtime poller's millisecond,
// which would turn a 200 µs schedule into bursts every millisecond.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(d.Nanoseconds())
		_ = syscall.Nanosleep(&ts, nil) // EINTR: loop
	}
}

// sortedCopy returns xs sorted.
func sortedCopy(xs []time.Duration) []time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}
