package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/featurestore/materialize"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/proto/gen/tailor/registry/v1/registryv1connect"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/registry/registryserver"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/nba"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/serving/predictserver"
	"github.com/tailorhq/tailor/serving/predlog"
	"github.com/tailorhq/tailor/serving/rpcserver"
	"github.com/tailorhq/tailor/training-export/exportserver"
)

func (a *app) serveCmd() *cobra.Command {
	var addr string
	var reload time.Duration
	var maxRequest int
	var onlineMemory bytesFlag = 1 << 30
	var warmStart bool
	var follow, refreshWindows time.Duration
	var pprofOn bool
	var modelRefresh time.Duration
	var nbaFile string
	var maxBatch, intraOp int
	var maxUpload bytesFlag = 1 << 30
	var gcHeadroom bytesFlag = defaultGCHeadroom
	var sweep time.Duration
	var maxDelay time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve features, the model registry and predictions over Connect, gRPC and gRPC-Web on one port",
		Long: "serve answers on --addr with Connect, gRPC and gRPC-Web (HTTP/1.1 and cleartext HTTP/2):\n" +
			"the FeatureService, RegistryService, PredictionService (Predict, and NextBestAction with --nba)\n" +
			"and ExportService, with gRPC health and reflection, and Prometheus metrics at /metrics.\n" +
			"Models are batched per --max-batch/--max-queue-delay unless their model.yaml says otherwise,\n" +
			"and aliases are re-resolved every --model-refresh. Newly applied definitions\n" +
			"are picked up within --reload. At start the online tier is filled with the latest rows from\n" +
			"ClickHouse up to --online-memory (health says NOT_SERVING until then); afterwards rows stored\n" +
			"by other servers or by ingest are picked up every --follow. SIGTERM or SIGINT stops\n" +
			"accepting, drains and exits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			tuneGC(int64(onlineMemory), int64(gcHeadroom))
			store, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			metrics := rpcserver.NewMetrics(reg)
			tier := onlinetier.New(onlinetier.Options{BudgetBytes: int64(onlineMemory)})
			online := onlinestore.New(store, tier, onlinestore.Options{})
			if err := tier.Register(reg); err != nil {
				return err
			}
			if err := online.Register(reg); err != nil {
				return err
			}
			fs, err := featureserver.New(ctx, store, online, reg, a.log)
			if err != nil {
				return err
			}
			go fs.WatchDefinitions(ctx, reload)
			follower := materialize.NewFollower(store, func() *definitions.Repo { return fs.Definitions().Repo }, online, a.log)
			if err := follower.Register(reg); err != nil {
				return err
			}
			// Follow from before the warm start, so rows stored while the
			// tier fills are not missed.
			if err := follower.Start(ctx); err != nil {
				return err
			}
			path, handler := featurestorev1connect.NewFeatureServiceHandler(fs,
				connect.WithInterceptors(metrics.Interceptor()),
				connect.WithReadMaxBytes(maxRequest),
				// Compressing a response costs more CPU than the lookup
				// behind it (a 40 KB answer: ~3 ms of gzip); on the
				// networks decision services call from, only huge answers
				// are worth it.
				connect.WithCompressMinBytes(1<<20))
			modelStore, err := registry.New(ctx, store.Conn(), store.Database(), registry.InspectONNX, a.log)
			if err != nil {
				return err
			}
			if err := onnxrt.Init(""); err != nil {
				// The feature service still serves; registering a model
				// reports the same error.
				a.log.Warn("ONNX Runtime unavailable: models cannot be registered or served", "err", err)
			}
			regPath, regHandler := registryv1connect.NewRegistryServiceHandler(
				registryserver.New(modelStore, func() *definitions.Repo { return fs.Definitions().Repo }, 0, a.log),
				connect.WithInterceptors(metrics.Interceptor()))
			manager := models.New(modelStore, func() *definitions.Repo { return fs.Definitions().Repo }, models.Options{
				Refresh: modelRefresh, Logger: a.log, MaxBatch: maxBatch, MaxQueueDelay: maxDelay,
				Session: onnxrt.SessionOptions{IntraOpThreads: intraOp},
			})
			if err := manager.Register(reg); err != nil {
				return err
			}
			defer manager.Close()
			go manager.Watch(ctx)
			predLog, err := predlog.New(ctx, store.Conn(), store.Database(), predlog.Options{Logger: a.log})
			if err != nil {
				return err
			}
			if err := predLog.Register(reg); err != nil {
				return err
			}
			defer func() {
				// Flush what is queued; the server has drained already.
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				if err := predLog.Close(fctx); err != nil {
					a.log.Warn("prediction log", "err", err)
				}
			}()
			var next *nba.Service
			if nbaFile != "" {
				cfg, err := nba.LoadConfig(nbaFile)
				if err != nil {
					return err
				}
				if err := cfg.Check(fs.Definitions().Repo); err != nil {
					return fmt.Errorf("%s: %w", nbaFile, err)
				}
				next = nba.New(cfg, manager, online, func() *definitions.Repo { return fs.Definitions().Repo })
			}
			predPath, predHandler := servingv1connect.NewPredictionServiceHandler(
				predictserver.New(manager, next, predLog, online, func() *definitions.Repo { return fs.Definitions().Repo }, a.log),
				connect.WithInterceptors(metrics.Interceptor()),
				connect.WithReadMaxBytes(maxRequest),
				connect.WithCompressMinBytes(1<<20))
			expPath, expHandler := exportv1connect.NewExportServiceHandler(
				exportserver.New(store, fs.Definitions, a.log),
				connect.WithInterceptors(metrics.Interceptor()),
				connect.WithReadMaxBytes(int(maxUpload)),
				// Training sets stream uncompressed: gzip of a 1M-row
				// export cost the server more CPU (seconds) than the rows
				// take to cross a network, and a third of the throughput.
				connect.WithCompression("gzip", nil, nil))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			fmt.Fprintf(a.out, "serving on %s\n", ln.Addr())
			var ready atomic.Bool
			go func() {
				if warmStart {
					a.warmStart(ctx, store, fs.Definitions().Repo, online, tier, int64(onlineMemory))
				}
				ready.Store(true)
				a.log.Info("ready")
				if refreshWindows > 0 {
					go a.refreshWindows(ctx, store, fs, online, refreshWindows)
				}
				if sweep > 0 {
					go sweepEvery(ctx, store, sweep)
				}
				follower.Run(ctx, follow)
			}()
			return rpcserver.Serve(ctx, ln, rpcserver.Options{
				Services: []rpcserver.Service{
					{Name: featurestorev1connect.FeatureServiceName, Path: path, Handler: handler},
					{Name: registryv1connect.RegistryServiceName, Path: regPath, Handler: regHandler},
					{Name: servingv1connect.PredictionServiceName, Path: predPath, Handler: predHandler},
					{Name: exportv1connect.ExportServiceName, Path: expPath, Handler: expHandler},
				},
				Registry: reg,
				Logger:   a.log,
				Ready:    ready.Load,
				Pprof:    pprofOn,
			})
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	cmd.Flags().DurationVar(&reload, "reload", time.Second, "how often to look for newly applied definitions")
	cmd.Flags().IntVar(&maxRequest, "max-request-bytes", 16<<20, "largest request accepted")
	cmd.Flags().Var(&onlineMemory, "online-memory", "memory budget of the online tier, e.g. 512MiB, 1GiB")
	cmd.Flags().BoolVar(&warmStart, "warm-start", true, "fill the online tier from ClickHouse, up to its budget, before reporting ready")
	cmd.Flags().Var(&maxUpload, "max-upload", "largest entity file an ExportService request may carry, e.g. 512MiB")
	cmd.Flags().IntVar(&maxBatch, "max-batch", 1, "rows per ONNX Runtime run when requests are batched dynamically, for models whose metadata does not say (1: no batching)")
	cmd.Flags().DurationVar(&maxDelay, "max-queue-delay", 500*time.Microsecond, "how long a request may wait for others to batch with (a full batch never waits)")
	cmd.Flags().IntVar(&intraOp, "intra-op-threads", 1, "ONNX Runtime threads inside one run, for models whose metadata does not say (0: one per core)")
	cmd.Flags().StringVar(&nbaFile, "nba", "", "next-best-action configuration (models, owned products, consent features, fallbacks)")
	cmd.Flags().DurationVar(&modelRefresh, "model-refresh", time.Second, "how often model aliases are re-resolved (an alias move is served within about this)")
	cmd.Flags().BoolVar(&pprofOn, "pprof", false, "serve Go's profiling endpoints under /debug/pprof/ (CPU, heap, goroutines)")
	cmd.Flags().DurationVar(&follow, "follow", 500*time.Millisecond, "how often to pick up rows stored by other processes (replicas, ingest)")
	cmd.Flags().DurationVar(&refreshWindows, "refresh-windows", 10*time.Minute, "how often to recompute the windowed views' values the tier holds, which age as time passes (0: never)")
	cmd.Flags().Var(&gcHeadroom, "gc-headroom", "heap the server may use beside the online tier's budget before Go's collector works hard (the soft memory limit is --online-memory plus this; GOMEMLIMIT overrides both)")
	cmd.Flags().DurationVar(&sweep, "sweep", 5*time.Second, "how often to drop what dead tailor processes left in ClickHouse: the staging and entity tables of leases whose holder is gone (0: only at start)")
	return cmd
}

// bytesFlag is a byte size given as a number with an optional KiB, MiB,
// GiB (or KB, MB, GB) suffix.
type bytesFlag int64

func (b *bytesFlag) String() string { return fmt.Sprintf("%dMiB", int64(*b)>>20) }
func (b *bytesFlag) Type() string   { return "size" }
func (b *bytesFlag) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a size like 512MiB or 1GiB", s)
	}
	*b = bytesFlag(n * mult)
	return nil
}

// warmStart fills the tier with the latest rows of every view until it
// holds 90% of its budget (filling it completely would only evict what was
// just loaded). A failure is logged: the tier is a cache, and keys not
// loaded are read through.
func (a *app) warmStart(ctx context.Context, store *offline.Store, repo *definitions.Repo, online *onlinestore.Store, tier *onlinetier.Tier, budget int64) {
	start := time.Now()
	full := func() bool { return tier.Stats().Bytes >= budget/10*9 }
	results, err := materialize.Run(ctx, store, repo, online, materialize.Options{Full: full})
	var keys int64
	for _, r := range results {
		keys += r.Keys
	}
	if err != nil {
		a.log.Warn("warm start incomplete; keys not loaded are read through", "err", err, "keys", keys)
		return
	}
	st := tier.Stats()
	a.log.Info("warm start", "views", len(results), "keys", keys, "entries", st.Entries, "bytes", st.Bytes, "full", full(), "duration", time.Since(start))
}

// defaultGCHeadroom is the heap a server is given beside its online
// tier: requests in flight, read-through results, a materialization's
// batches, and the garbage they leave between collections.
const defaultGCHeadroom = 512 << 20

// tuneGC sets the server's garbage collector unless GOMEMLIMIT or GOGC say
// otherwise. The tier is a large, long-lived heap, and every request
// leaves short-lived garbage: with the default GOGC of 100 and the CLI's
// 160 MiB limit, a small tier would be collected after a handful of
// requests and a large one continuously. A server instead lets garbage
// grow to four times the live heap, capped by the soft memory limit of
// the tier's budget plus headroom: the process's heap settles near that
// limit under load, whatever the tier holds.
func tuneGC(budget, headroom int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(budget + headroom)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

// sweepEvery drops what dead processes left in ClickHouse every interval,
// until ctx ends.
func sweepEvery(ctx context.Context, store *offline.Store, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		store.Sweep(ctx)
	}
}

// refreshWindows recomputes the windowed views' values the tier holds
// every interval, until ctx ends.
func (a *app) refreshWindows(ctx context.Context, store *offline.Store, fs *featureserver.Server, tier materialize.Refresher, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		n, err := materialize.RefreshWindows(ctx, store, fs.Definitions().Repo, tier)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("refresh windowed views", "err", err)
			}
			continue
		}
		a.log.Debug("refreshed windowed views", "rows", n, "took", time.Since(start))
	}
}
