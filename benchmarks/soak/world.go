package main

import (
	"bufio"
	"context"
	"embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// testdata holds the feature repo, the model specs and nba.yaml.
//
//go:embed testdata
var testdata embed.FS

// database is the soak's database in its private ClickHouse.
const database = "soak"

// taskModels are the models registered (each aliased champion): the file
// name in -models and testdata/NAME.yaml.
var taskModels = []string{"next_product", "timing", "channel"}

// world is what the soak runs against: a private ClickHouse with the data
// set and one tailor server.
type world struct {
	cfg    config
	dir    string // temporary; holds everything below
	home   string // TAILOR_HOME of the tailor commands
	ch     *chserver.Server
	server *serverProc
}

// setUp builds the world step by step; a non-nil world comes back even
// with an error, so the caller can tear down what was started.
func setUp(ctx context.Context, cfg config) (*world, error) {
	if _, err := os.Stat(cfg.tailor); err != nil {
		return nil, fmt.Errorf("the tailor binary: %w (run make build, or give -tailor)", err)
	}
	for _, m := range taskModels {
		if _, err := os.Stat(filepath.Join(cfg.models, m+".onnx")); err != nil {
			return nil, fmt.Errorf("model %s: %w (give -models)", m, err)
		}
	}
	dir, err := os.MkdirTemp("", "tailor-soak-")
	if err != nil {
		return nil, err
	}
	w := &world{cfg: cfg, dir: dir, home: filepath.Join(dir, "home")}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"start ClickHouse", w.startClickHouse},
		{"write the repo and specs", w.writeTestdata},
		{"apply the repo", func(ctx context.Context) error { return w.tailorRun(ctx, "apply", w.path("repo")) }},
		{fmt.Sprintf("load %d customers", cfg.keys), w.loadData},
		{"merge the loaded parts", w.settle},
		{"start tailor serve (warm start)", w.startServer},
		{"materialize every view (the tier fills to its budget)", w.materialize},
		{"register the models", w.registerModels},
		{"check one of each request", w.checkRequests},
	}
	for _, s := range steps {
		began := time.Now()
		if err := s.do(ctx); err != nil {
			return w, fmt.Errorf("%s: %w", s.what, err)
		}
		logf("%s: %s", s.what, time.Since(began).Round(time.Millisecond))
	}
	return w, nil
}

// tearDown stops the server (if still running) and the ClickHouse and
// removes the temporary directory unless -keep.
func (w *world) tearDown() {
	if w.server != nil {
		w.server.stop()
	}
	if w.ch != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.ch.Stop(ctx); err != nil {
			logf("stopping ClickHouse: %v", err)
		}
	}
	if w.cfg.keep {
		logf("kept %s", w.dir)
		return
	}
	if err := os.RemoveAll(w.dir); err != nil {
		logf("removing %s: %v", w.dir, err)
	}
}

// path is a file of the world's directory.
func (w *world) path(name string) string { return filepath.Join(w.dir, name) }

func (w *world) startClickHouse(ctx context.Context) error {
	var err error
	w.ch, err = chserver.Start(ctx, chserver.Options{Dir: w.path("clickhouse"), Logger: quietLogger()})
	return err
}

// writeTestdata copies the embedded testdata into the world's directory.
func (w *world) writeTestdata(context.Context) error {
	return fs.WalkDir(testdata, "testdata", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := testdata.ReadFile(p)
		if err != nil {
			return err
		}
		dst := w.path(strings.TrimPrefix(p, "testdata/"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}

// tailorArgs are the global flags of every tailor command.
func (w *world) tailorArgs(args ...string) []string {
	return append([]string{"--clickhouse", w.ch.DSN(), "--database", database, "--home", w.home}, args...)
}

// tailorRun runs a tailor command to its end; its output is in the error.
func (w *world) tailorRun(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, w.cfg.tailor, w.tailorArgs(args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("tailor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// loadData writes the data set as CSV and ingests it: per customer a
// profile row of the last two days (and an older one, which the latest
// hides), and an activity row of the last 36 hours, a third of them older
// than the view's 24h ttl.
func (w *world) loadData(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(w.cfg.seed, 0))
	now := time.Now().Unix()
	profile := [][]string{{"customer_id", "event_ts", "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "owned", "consent_email", "consent_sms"}}
	activity := [][]string{{"customer_id", "event_ts", "orders_7d", "spend_30d", "device", "open_hour"}}
	profileRow := func(key string, ts int64) []string {
		row := []string{key, strconv.FormatInt(ts, 10)}
		for range 10 {
			row = append(row, strconv.FormatFloat(rng.NormFloat64(), 'g', 6, 32))
		}
		return append(row, ownedJSON(rng), strconv.FormatBool(rng.IntN(5) > 0), strconv.FormatBool(rng.IntN(2) == 0))
	}
	for i := range w.cfg.keys {
		key := customerKey(i)
		ts := now - rng.Int64N(48*3600)
		profile = append(profile, profileRow(key, ts-72*3600), profileRow(key, ts))
		activity = append(activity, []string{key, strconv.FormatInt(now-rng.Int64N(36*3600), 10),
			strconv.Itoa(rng.IntN(12)), strconv.FormatFloat(float64(rng.IntN(100_000))/100, 'f', 2, 64),
			devices[rng.IntN(len(devices))], strconv.Itoa(rng.IntN(24))})
	}
	for view, rows := range map[string][][]string{"profile": profile, "activity": activity} {
		path := w.path(view + ".csv")
		if err := writeCSV(path, rows); err != nil {
			return err
		}
		if err := w.tailorRun(ctx, "ingest", view, path); err != nil {
			return err
		}
	}
	return nil
}

// settle merges the parts the load left in the soak's tables and waits
// until ClickHouse runs no merge, so the soak does not start against
// background work of its own set-up.
func (w *world) settle(ctx context.Context) error {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{w.ch.TCPAddr()}})
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND engine LIKE '%MergeTree'", database)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE `%s`.`%s` FINAL", database, t)); err != nil {
			return fmt.Errorf("optimize %s: %w", t, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var merges uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&merges); err != nil {
			return err
		}
		if merges == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d merges still running after 2 minutes", merges)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ownedJSON is up to two products a customer owns, as the JSON array a CSV
// cell of an array<string> feature holds.
func ownedJSON(rng *rand.Rand) string {
	var ps []string
	for range rng.IntN(3) {
		ps = append(ps, fmt.Sprintf("%q", products[rng.IntN(len(products))]))
	}
	return "[" + strings.Join(ps, ",") + "]"
}

func writeCSV(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := csv.NewWriter(bw).WriteAll(rows); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startServer runs tailor serve and waits until it reports SERVING (its
// warm start done).
func (w *world) startServer(ctx context.Context) error {
	args := w.tailorArgs("--log-level", "info", "serve", "--addr", "127.0.0.1:0",
		"--online-memory", w.cfg.onlineMemory, "--nba", w.path("nba.yaml"))
	p, err := startServer(ctx, w.cfg.tailor, append(args, w.cfg.serveArgs...), w.path("server.log"))
	if p != nil {
		w.server = p
	}
	if err != nil {
		return err
	}
	m, err := scrape(ctx, p.base)
	if err != nil {
		return err
	}
	logf("warm start: %.0f entries, %s of the %s budget", m.get("tailor_online_tier_entries"),
		mib(m.get("tailor_online_tier_bytes")), mib(m.get("tailor_online_tier_budget_bytes")))
	return nil
}

// materialize loads every view into the server's tier, as an operator
// would after a load. The data set is larger than the tier, so the tier
// ends full and evicts from the first read-through on (the warm start
// stops at 90% of the budget).
func (w *world) materialize(ctx context.Context) error {
	if err := w.tailorRun(ctx, "materialize", "--server", w.server.base); err != nil {
		return err
	}
	m, err := scrape(ctx, w.server.base)
	if err != nil {
		return err
	}
	logf("tier after materialize: %.0f entries, %s of the %s budget, %.0f evictions", m.get(mTierEntries),
		mib(m.get(mTierBytes)), mib(m.get(mTierBudget)), m.get(mEvictions))
	return nil
}

// registerModels registers the three task models with their specs and
// aliases each champion.
func (w *world) registerModels(ctx context.Context) error {
	for _, m := range taskModels {
		onnx, err := filepath.Abs(filepath.Join(w.cfg.models, m+".onnx"))
		if err != nil {
			return err
		}
		if err := w.tailorRun(ctx, "models", "--server", w.server.base, "register", onnx, "--spec", w.path(m+".yaml")); err != nil {
			return err
		}
		if err := w.tailorRun(ctx, "models", "--server", w.server.base, "alias", m, "champion", "1"); err != nil {
			return err
		}
	}
	return nil
}

// checkRequests sends one request of each kind and wants a right answer:
// a world that cannot answer is broken, not a soak failure. It also loads
// and warms the models.
func (w *world) checkRequests(ctx context.Context) error {
	c := newClient(w.server.base)
	cfg := w.cfg
	cfg.unknown = 0
	g := newRequests(cfg, rand.New(rand.NewPCG(cfg.seed, 1<<32)))
	for op := range numOps {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := g.prepare(op)(rctx, c)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", opNames[op], err)
		}
	}
	return nil
}

// serverProc is tailor serve, a child process in its own process group
// (a Ctrl-C at the terminal reaches the soak, which stops the server
// itself) that gets SIGTERM if the soak dies.
type serverProc struct {
	cmd     *exec.Cmd
	base    string // http://127.0.0.1:PORT
	logPath string // its stdout and stderr
	log     *os.File
	exited  chan struct{}
	waitErr error

	stopOnce sync.Once
	stopped  stopResult
}

// stopResult is how the server ended.
type stopResult struct {
	took   time.Duration // from SIGTERM to exit
	err    error         // its exit status; nil: exit 0
	killed bool          // it did not exit within stopGrace and got SIGKILL
}

// stopGrace is how long the server may take to drain after SIGTERM.
const stopGrace = 30 * time.Second

// startServer starts tailor serve, reads the "serving on ADDR" line it
// prints first, and waits until gRPC health says SERVING.
func startServer(ctx context.Context, bin string, args []string, logPath string) (*serverProc, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &serverProc{cmd: cmd, logPath: logPath, log: logFile, exited: make(chan struct{})}
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		first <- line
		_, _ = io.Copy(logFile, r)
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(time.Minute):
		return p, errors.New("tailor serve printed nothing in a minute")
	case <-ctx.Done():
		return p, ctx.Err()
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "serving on ")
	if !ok {
		return p, fmt.Errorf("tailor serve said %q (log: %s)", line, logPath)
	}
	p.base = "http://" + addr
	return p, p.waitServing(ctx, 10*time.Minute)
}

// waitServing polls gRPC health until the FeatureService is SERVING.
func (p *serverProc) waitServing(ctx context.Context, limit time.Duration) error {
	health := grpchealth.NewClient(h2c(), p.base, connect.WithGRPC())
	deadline := time.Now().Add(limit)
	for {
		st, err := health.Check(ctx, &grpchealth.CheckRequest{Service: featurestorev1connect.FeatureServiceName})
		if err == nil && st.Status == grpchealth.StatusServing {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("tailor serve exited: %v (log: %s)", p.waitErr, p.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not SERVING within %s: %v %v (log: %s)", limit, st, err, p.logPath)
		}
	}
}

// stop sends SIGTERM and waits up to stopGrace for a clean exit, then
// kills. Only the first call acts; every call returns how it ended.
func (p *serverProc) stop() stopResult {
	p.stopOnce.Do(func() {
		began := time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.stopped.killed = true
		}
		p.stopped.took = time.Since(began)
		p.stopped.err = p.waitErr
		p.log.Close()
	})
	return p.stopped
}

// h2c is an HTTP client speaking cleartext HTTP/2 with prior knowledge,
// as gRPC clients do, on a transport (so a connection) of its own.
func h2c() *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protos}}
}

func mib(bytes float64) string { return fmt.Sprintf("%.0f MiB", bytes/(1<<20)) }
