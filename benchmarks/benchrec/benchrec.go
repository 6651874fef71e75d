// Package benchrec records benchmark figures for benchmarks/RESULTS.md:
// each benchmark states what it measured, its floor from the same run, the
// ratio and the target, and may add latency samples for a histogram. The
// records go to the directory named by $BENCH_RESULTS (nothing is written
// when it is unset), one JSON file per figure; `go run
// ./benchmarks/report` turns them into RESULTS.md and SVG plots.
package benchrec

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Result is one figure of a benchmark.
type Result struct {
	// Area groups figures in the report (e.g. "online features").
	Area string `json:"area"`
	// Benchmark is the Go benchmark's name (b.Name()).
	Benchmark string `json:"benchmark"`
	// Measure says what was measured.
	Measure string `json:"measure"`
	// Value is tailor's figure, with its unit.
	Value string `json:"value"`
	// Floor names the floor and gives its figure from the same run.
	Floor string `json:"floor,omitempty"`
	// Ratio is tailor against the floor (e.g. "1.19x").
	Ratio string `json:"ratio,omitempty"`
	// Target is the target, and Met whether it was reached (nil:
	// no target).
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	// Machine is where it ran.
	Machine string `json:"machine"`
	// When is when it ran.
	When time.Time `json:"when"`
	// Histograms are latency distributions to plot, tailor's and its
	// floor's side by side.
	Histograms []Histogram `json:"histograms,omitempty"`
}

// Histogram is a latency distribution of several series over shared
// logarithmic buckets.
type Histogram struct {
	Title  string   `json:"title"`
	Series []Series `json:"series"`
}

// Series is one latency distribution: counts per bucket, and percentiles.
type Series struct {
	Name string `json:"name"`
	// Bounds are the buckets' upper bounds in microseconds; Counts the
	// samples in each (the last bucket holds everything above).
	Bounds []float64 `json:"bounds_us"`
	Counts []int     `json:"counts"`
	P50    float64   `json:"p50_us"`
	P99    float64   `json:"p99_us"`
	P999   float64   `json:"p999_us"`
}

// Bounds are the histogram buckets every series shares: 20 per decade
// from 10µs to 10s.
var Bounds = func() []float64 {
	var b []float64
	for i := 0; i <= 120; i++ {
		b = append(b, 10*math.Pow(10, float64(i)/20))
	}
	return b
}()

// NewSeries buckets latency samples (negative ones, failed requests, are
// left out).
func NewSeries(name string, samples []time.Duration) Series {
	s := Series{Name: name, Bounds: Bounds, Counts: make([]int, len(Bounds)+1)}
	var us []float64
	for _, d := range samples {
		if d < 0 {
			continue
		}
		x := float64(d) / float64(time.Microsecond)
		us = append(us, x)
		i := sort.SearchFloat64s(Bounds, x)
		s.Counts[i]++
	}
	sort.Float64s(us)
	q := func(p float64) float64 {
		if len(us) == 0 {
			return 0
		}
		i := int(p*float64(len(us))+0.5) - 1
		return us[max(0, min(i, len(us)-1))]
	}
	s.P50, s.P99, s.P999 = q(0.5), q(0.99), q(0.999)
	return s
}

// Machine describes this machine: OS, architecture and cores.
func Machine() string {
	return fmt.Sprintf("%s/%s, %d cores", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
}

// Met is a helper for Result.Met.
func Met(ok bool) *bool { return &ok }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.=-]+`)

// Record writes r to $BENCH_RESULTS, if set; the file is named after the
// benchmark and measure, so a rerun replaces its figure.
func Record(r Result) error {
	dir := os.Getenv("BENCH_RESULTS")
	if dir == "" {
		return nil
	}
	if r.Machine == "" {
		r.Machine = Machine()
	}
	if r.When.IsZero() {
		r.When = time.Now().UTC().Truncate(time.Second)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	name := unsafeName.ReplaceAllString(strings.ToLower(r.Benchmark+"_"+r.Measure), "_")
	if len(name) > 120 {
		name = name[:120]
	}
	return os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644)
}
