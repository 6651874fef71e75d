package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

// TestReport records two figures, one with a latency histogram, and
// checks the report's tables, target marks and plots.
func TestReport(t *testing.T) {
	in := t.TempDir()
	t.Setenv("BENCH_RESULTS", in)
	var fast, slow []time.Duration
	for i := range 1000 {
		fast = append(fast, time.Duration(200+i)*time.Microsecond)
		slow = append(slow, time.Duration(900+2*i)*time.Microsecond)
	}
	for _, r := range []benchrec.Result{
		{Area: "online", Benchmark: "BenchmarkA", Measure: "p99 | latency", Value: "2.9 ms", Floor: "echo 1.2 ms", Ratio: "2.42x", Target: "<= 2 ms", Met: benchrec.Met(false),
			Histograms: []benchrec.Histogram{{Title: "A at 1000 rps", Series: []benchrec.Series{benchrec.NewSeries("echo", fast), benchrec.NewSeries("tailor", slow)}}}},
		{Area: "offline", Benchmark: "BenchmarkB", Measure: "ingest", Value: "700k rows/s", Floor: "client 720k", Ratio: "0.97x", Target: ">= 0.5x", Met: benchrec.Met(true)},
	} {
		if err := benchrec.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := run(in, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"## offline", "## online", "| `BenchmarkB` | ingest | 700k rows/s | client 720k | 0.97x | >= 0.5x ✓ |",
		`p99 \| latency`, "<= 2 ms ✗ missed", "1 met, 1 missed", "![A at 1000 rps](plots/benchmarka_p99___latency_0.svg)"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "## offline") > strings.Index(md, "## online") {
		t.Error("areas are not in order")
	}
	plot, err := os.ReadFile(filepath.Join(filepath.Dir(out), "plots", "benchmarka_p99___latency_0.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(plot, new(struct{})); err != nil {
		t.Fatalf("the plot is not well-formed XML: %v", err)
	}
	if !strings.Contains(string(plot), "tailor: p50 1.9ms, p99 2.88ms") || strings.Count(string(plot), "<polyline") != 2 {
		t.Errorf("plot:\n%s", plot)
	}
}

func TestNoFigures(t *testing.T) {
	if err := run(t.TempDir(), filepath.Join(t.TempDir(), "R.md")); err == nil || !strings.Contains(err.Error(), "make bench") {
		t.Errorf("an empty directory: %v", err)
	}
}
