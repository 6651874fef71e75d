package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// recorder collects the clients' outcomes: the latency of every answered
// request per op, and every failure by kind.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   [numOps]opStats
	kinds map[string]*failureKind
	order []*failureKind // kinds in the order they first happened
	// waits counts requests that waited for a client's in-flight slot.
	waits int
	// gaveUp counts the abandoned requests (-abandon) by how they ended:
	// answered, or ended by their deadline.
	gaveUp struct{ answered, expired int }
}

// opStats are one op's outcomes over the whole load and since the last
// sample.
type opStats struct {
	latencies []time.Duration // answered requests
	window    []time.Duration // answered since the last sample
	failed    int
	winFailed int
}

// failureKind is one kind of failure: an op, a code and a message with
// its numbers (ports, counts) blanked out.
type failureKind struct {
	op          op
	code        string // a Connect code, or "wrong answer"
	examples    []string
	count       int
	first, last time.Duration // since the load started
}

// liveExamples is how many failures of each kind are printed as they
// happen (and kept for the summary).
const liveExamples = 3

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, kinds: map[string]*failureKind{}}
}

// capped records a request that waited because its client had
// maxInFlight requests outstanding.
func (r *recorder) capped() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waits == 0 {
		logf("t=%s a client has %d requests outstanding: the server falls behind the schedule", time.Since(r.start).Round(100*time.Millisecond), maxInFlight)
	}
	r.waits++
}

// abandoned records the outcome of a request sent with a deadline of a
// few milliseconds: answered, or DeadlineExceeded or Canceled, are as
// expected; any other failure is a failure.
func (r *recorder) abandoned(o op, err error) {
	switch connect.CodeOf(err) {
	case connect.CodeDeadlineExceeded, connect.CodeCanceled:
		r.mu.Lock()
		r.gaveUp.expired++
		r.mu.Unlock()
		return
	}
	if err != nil {
		r.done(o, 0, err)
		return
	}
	r.mu.Lock()
	r.gaveUp.answered++
	r.mu.Unlock()
}

// done records one request's outcome.
func (r *recorder) done(o op, latency time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.ops[o]
	if err == nil {
		s.latencies = append(s.latencies, latency)
		s.window = append(s.window, latency)
		return
	}
	s.failed++
	s.winFailed++
	code, msg := classify(err)
	key := fmt.Sprintf("%d\x00%s\x00%s", o, code, numbers.ReplaceAllString(msg, "N"))
	k := r.kinds[key]
	at := time.Since(r.start)
	if k == nil {
		k = &failureKind{op: o, code: code, first: at}
		r.kinds[key] = k
		r.order = append(r.order, k)
	}
	k.count++
	k.last = at
	if len(k.examples) < liveExamples {
		k.examples = append(k.examples, msg)
		logf("t=%s %s failed (%s): %s", at.Round(100*time.Millisecond), opNames[o], code, msg)
	}
}

// numbers are blanked out of messages to group failures into kinds.
var numbers = regexp.MustCompile(`[0-9]+`)

// classify returns a failure's Connect code (or "wrong answer") and its
// message.
func classify(err error) (code, msg string) {
	var w *wrongAnswer
	if errors.As(err, &w) {
		return "wrong answer", w.msg
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code().String(), ce.Message()
	}
	return connect.CodeOf(err).String(), err.Error()
}

// window is one op's outcomes since the last sample; it starts a new
// window.
type window struct {
	answered, failed int
	p50, p99         time.Duration
}

func (r *recorder) takeWindows() [numOps]window {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [numOps]window
	for o := range numOps {
		s := &r.ops[o]
		slices.Sort(s.window)
		out[o] = window{answered: len(s.window), failed: s.winFailed,
			p50: percentile(s.window, 0.50), p99: percentile(s.window, 0.99)}
		s.window, s.winFailed = s.window[:0], 0
	}
	return out
}

// percentile is the nearest-rank q-quantile of sorted latencies.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// sample is the server's state at one instant of the load.
type sample struct {
	at       time.Duration // since the load started
	rss, hwm int64         // VmRSS and VmHWM of the server (bytes)
	threads  int
	cpu      time.Duration // the server's CPU time so far
	chRSS    int64         // VmRSS of the ClickHouse
	pressure float64       // the machine's CPU pressure (cpuPressure10)
	m        metrics       // the server's /metrics
	ops      [numOps]window
	err      error // reading /proc or /metrics failed
}

// Names in the server's /metrics.
const (
	mGoroutines   = "go_goroutines"
	mHeapInuse    = "go_memstats_heap_inuse_bytes"
	mProcessRSS   = "process_resident_memory_bytes"
	mTierBytes    = "tailor_online_tier_bytes"
	mTierEntries  = "tailor_online_tier_entries"
	mTierBudget   = "tailor_online_tier_budget_bytes"
	mTierHits     = "tailor_online_tier_hits_total"
	mTierMisses   = "tailor_online_tier_misses_total"
	mEvictions    = "tailor_online_tier_evictions_total"
	mReadThroughs = "tailor_online_read_through_queries_total"
	// mReadThroughSecs is a histogram.
	mReadThroughSecs = "tailor_online_read_through_seconds"
	mRPCRequests     = "tailor_rpc_requests_total"
	// mRPCSeconds is a histogram by procedure.
	mRPCSeconds = "tailor_rpc_duration_seconds"
	mPredLog    = "tailor_prediction_log_records_total"
	// mFollowPolls is by result.
	mFollowPolls     = "tailor_online_follow_polls_total"
	mFollowRefreshed = "tailor_online_follow_refreshed_total"
)

// takeSample reads the server's /proc and /metrics and the clients'
// windows.
func (w *world) takeSample(ctx context.Context, rec *recorder) sample {
	s := sample{at: time.Since(rec.start), ops: rec.takeWindows(), pressure: cpuPressure10()}
	pid := w.server.cmd.Process.Pid
	st, err := procStatus(pid)
	if err == nil {
		s.rss, s.hwm, s.threads = st["VmRSS"], st["VmHWM"], int(st["Threads"])
		s.cpu, err = procCPU(pid)
	}
	if chPID := w.ch.PID(); chPID != 0 {
		if cs, err := procStatus(chPID); err == nil {
			s.chRSS = cs["VmRSS"]
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, merr := scrape(sctx, w.server.base)
	s.m = m
	s.err = errors.Join(err, merr)
	return s
}

// procStatus reads /proc/PID/status: the kB fields in bytes, the others
// as numbers.
func procStatus(pid int) (map[string]int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) == 2 && f[1] == "kB" {
			n *= 1024
		}
		out[name] = n
	}
	return out, nil
}

// procCPU is the CPU time (user and system, every thread) of pid, from
// /proc/PID/stat in clock ticks of 1/100 s (USER_HZ on Linux).
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// metrics are the samples of a Prometheus text exposition, by series
// ("name" or "name{labels}").
type metrics map[string]float64

// get sums every series of a metric name.
func (m metrics) get(name string) float64 {
	total := 0.0
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			total += v
		}
	}
	return total
}

// labelled returns the series of a metric name with their labels, e.g.
// {`code="ok",procedure="/x"`: 3}.
func (m metrics) labelled(name string) map[string]float64 {
	out := map[string]float64{}
	for series, v := range m {
		if labels, ok := strings.CutPrefix(series, name+"{"); ok {
			out[strings.TrimSuffix(labels, "}")] = v
		}
	}
	return out
}

// parseMetrics reads the Prometheus text format: comment lines skipped,
// each sample "series value [timestamp]".
func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// Label values may hold spaces; the value follows the closing brace.
		cut := strings.LastIndexByte(line, '}') + 1
		if cut == 0 {
			cut = strings.IndexByte(line, ' ')
		}
		if cut <= 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		f := strings.Fields(line[cut:])
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:cut]] = v
	}
	return m, sc.Err()
}

// scrape reads a server's /metrics.
func scrape(ctx context.Context, base string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// quietLogger logs warnings and errors on stderr (chserver's lifecycle
// events are info).
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
