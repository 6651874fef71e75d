// Command soak runs one `tailor serve` against a private ClickHouse under a
// steady mixed load for minutes, and checks that it stays healthy: no
// request fails, and the server's resident memory and goroutines stay flat
// once warmed up. Run it with `make soak` (SOAK_DURATION, SOAK_FLAGS).
//
// It builds a world of its own in a temporary directory: a ClickHouse
// (featurestore/chserver), the feature repo in testdata/repo with a key
// space larger than the online tier (so requests both hit the tier and
// read through to ClickHouse; every view is materialized after the warm
// start, so the tier is full and evicts), and the three task
// models of serving/testdata/models with the specs in testdata. The
// server is a child process, so its RSS is its own. Clients call it over
// loopback with the generated Connect clients: GetOnlineFeatures (known and
// unknown keys), Push (new rows for the keys being read), Predict and
// NextBestAction. Every five seconds it samples the server (/proc and
// /metrics) and the clients' latencies; at the end it prints a summary,
// writes it to -out, stops the server with SIGTERM and the ClickHouse, and
// exits non-zero when a request failed or memory or goroutines grew (see
// flatness in report.go for the criterion).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	tailor       string        // the tailor binary
	models       string        // directory of the committed ONNX test models
	out          string        // the summary file; samples and the server log go beside it
	duration     time.Duration // how long the load runs
	warmup       time.Duration // the first part of the load, left out of the flatness check
	interval     time.Duration // how often the server is sampled
	clients      int           // client goroutines, each on its own connection
	rate         float64       // requests per second, all clients together
	mix          mix           // the share of each RPC
	keys         int           // customers in the data set
	zipf         float64       // popularity skew of the customers asked for (0: uniform)
	rows         int           // most entity rows of a GetOnlineFeatures
	unknown      float64       // share of GetOnlineFeatures rows asking for customers nobody has
	abandon      float64       // share of requests sent with a deadline of a few ms
	onlineMemory string        // tailor serve --online-memory
	serveArgs    []string      // more flags for tailor serve
	timeout      time.Duration // per request
	seed         uint64
	keep         bool // keep the temporary directory (ClickHouse data, server log)
}

func parseFlags(args []string) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.StringVar(&c.tailor, "tailor", "bin/tailor", "the tailor binary to run (make build)")
	fs.StringVar(&c.models, "models", "serving/testdata/models", "directory of the ONNX test models (next_product, timing, channel)")
	fs.StringVar(&c.out, "out", "benchmarks/out/soak.md", "where to write the summary; the samples (.csv) and the server's log (.log) go beside it")
	fs.DurationVar(&c.duration, "duration", 5*time.Minute, "how long the load runs")
	fs.DurationVar(&c.warmup, "warmup", time.Minute, "the first part of the load, left out of the flatness check")
	fs.DurationVar(&c.interval, "sample", 5*time.Second, "how often the server is sampled")
	fs.IntVar(&c.clients, "clients", 6, "client goroutines, each on its own HTTP/2 connection")
	fs.Float64Var(&c.rate, "rate", 400, "requests per second, all clients together")
	mixText := fs.String("mix", "get=60,push=3,predict=27,nba=10", "share of each RPC: get (GetOnlineFeatures), push, predict, nba (NextBestAction)")
	fs.IntVar(&c.keys, "keys", 150_000, "customers in the data set (one profile and one activity row each, plus an older profile row)")
	fs.Float64Var(&c.zipf, "zipf", 1.4, "popularity skew: customers are drawn from a Zipf distribution of this exponent (> 1), or uniformly with 0")
	fs.IntVar(&c.rows, "rows", 4, "most entity rows of a GetOnlineFeatures (each asks for 1 to this many)")
	fs.Float64Var(&c.unknown, "unknown", 0.01, "share of GetOnlineFeatures entity rows asking for a customer nobody has")
	fs.Float64Var(&c.abandon, "abandon", 0, "share of requests sent with a deadline of 1 to 21 ms, as a client that gives up; they may end DeadlineExceeded or Canceled, and only other failures count")
	fs.StringVar(&c.onlineMemory, "online-memory", "64MiB", "tailor serve --online-memory (smaller than the data set, so the tier evicts)")
	serveArgs := fs.String("serve-args", "", "more flags for tailor serve, space separated (e.g. \"--follow 1s\")")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of each request")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the data set and of the load")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (ClickHouse, data, server log) and print its path")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.mix, err = parseMix(*mixText); err != nil {
		return c, fmt.Errorf("-mix: %w", err)
	}
	c.serveArgs = strings.Fields(*serveArgs)
	switch {
	case c.clients < 1:
		return c, fmt.Errorf("-clients %d: at least one", c.clients)
	case c.rate <= 0:
		return c, fmt.Errorf("-rate %g: must be positive", c.rate)
	case c.keys < 100:
		return c, fmt.Errorf("-keys %d: at least 100", c.keys)
	case c.interval <= 0 || c.duration <= 0 || c.warmup < 0:
		return c, fmt.Errorf("-duration, -sample must be positive, -warmup not negative")
	case c.unknown < 0 || c.unknown > 1 || c.abandon < 0 || c.abandon > 1:
		return c, fmt.Errorf("-unknown %g, -abandon %g: shares between 0 and 1", c.unknown, c.abandon)
	case c.zipf != 0 && c.zipf <= 1:
		return c, fmt.Errorf("-zipf %g: an exponent above 1, or 0 for uniform", c.zipf)
	case c.rows < 1:
		return c, fmt.Errorf("-rows %d: at least one", c.rows)
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// Exit codes: 0 the soak passed; 1 it ran and failed (a failed request,
// growth after warm-up, an unclean stop) or was interrupted; 2 the world
// could not be set up.
const (
	exitPass   = 0
	exitFail   = 1
	exitBroken = 2
)

// run sets the world up, loads it, reports, and tears it down whatever
// happened: SIGINT or SIGTERM stop the load early, and the summary of what
// ran is still written.
func run(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	w, err := setUp(ctx, cfg)
	if w != nil {
		defer w.tearDown()
	}
	if err != nil {
		logf("setting up failed: %v", err)
		if w != nil && w.server != nil {
			w.server.stop()
			logf("server log: %s", w.server.logPath)
		}
		return exitBroken
	}
	logf("world ready in %s; load: %d clients, %g requests/s, %s, for %s (warm-up %s)",
		time.Since(began).Round(time.Second), cfg.clients, cfg.rate, cfg.mix, cfg.duration, cfg.warmup)
	res := soak(ctx, cfg, w)
	res.interrupted = ctx.Err() != nil
	res.stop = w.server.stop()
	res.serverLog = scanServerLog(w.server.logPath)
	rep := newReport(cfg, res)
	fmt.Println()
	fmt.Print(rep.markdown)
	if err := rep.write(cfg.out, w.server.logPath); err != nil {
		logf("writing the report: %v", err)
	} else {
		logf("summary written to %s (samples %s, server log %s)", cfg.out, sibling(cfg.out, "-samples.csv"), sibling(cfg.out, "-server.log"))
	}
	if !rep.pass {
		return exitFail
	}
	return exitPass
}

// sibling names a file beside the summary: soak.md -> soak-samples.csv.
func sibling(out, suffix string) string {
	return strings.TrimSuffix(out, filepath.Ext(out)) + suffix
}

// logf prints the harness's progress on stderr; the summary goes to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
}
