// Command report turns the figures benchmarks recorded (benchrec, one JSON
// file each) into benchmarks/RESULTS.md: one table per area with every
// figure, its floor from the same run, the ratio, the target and whether it
// was met, and an SVG histogram per latency distribution.
//
//	go run ./benchmarks/report -in benchmarks/out -out benchmarks/RESULTS.md
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

func main() {
	in := flag.String("in", "benchmarks/out", "directory of recorded figures")
	out := flag.String("out", "benchmarks/RESULTS.md", "the report")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		log.Fatal(err)
	}
}

func run(in, out string) error {
	files, err := filepath.Glob(filepath.Join(in, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no recorded figures in %s (run make bench)", in)
	}
	var results []benchrec.Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r benchrec.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		results = append(results, r)
	}
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].Area != results[j].Area {
			return results[i].Area < results[j].Area
		}
		if results[i].Benchmark != results[j].Benchmark {
			return results[i].Benchmark < results[j].Benchmark
		}
		return results[i].Measure < results[j].Measure
	})
	plots := filepath.Join(filepath.Dir(out), "plots")
	if err := os.MkdirAll(plots, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	b.WriteString("Written by `make bench` (`go run ./benchmarks/report`) from the figures the benchmarks recorded; do not edit by hand.\n")
	b.WriteString("Every figure is measured against a floor taken in the same run on the same machine; ratios compare the two.\n\n")
	machines := map[string]bool{}
	first, last := results[0].When, results[0].When
	for _, r := range results {
		machines[r.Machine] = true
		if r.When.Before(first) {
			first = r.When
		}
		if r.When.After(last) {
			last = r.When
		}
	}
	fmt.Fprintf(&b, "Machine: %s. Run between %s and %s.\n", strings.Join(keys(machines), "; "), first.Format("2006-01-02 15:04"), last.Format("15:04 MST"))
	met, missed := 0, 0
	for _, r := range results {
		if r.Met != nil {
			if *r.Met {
				met++
			} else {
				missed++
			}
		}
	}
	fmt.Fprintf(&b, "Targets: %d met, %d missed (see the README's Performance section for why).\n", met, missed)
	area := ""
	for _, r := range results {
		if r.Area != area {
			area = r.Area
			fmt.Fprintf(&b, "\n## %s\n\n| benchmark | measure | tailor | floor | ratio | target |\n| --- | --- | --- | --- | --- | --- |\n", area)
		}
		target := r.Target
		if r.Met != nil {
			if *r.Met {
				target += " ✓"
			} else {
				target += " ✗ missed"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", r.Benchmark, cell(r.Measure), cell(r.Value), cell(r.Floor), cell(r.Ratio), cell(target))
	}
	var plotted []string
	for _, r := range results {
		for i, h := range r.Histograms {
			name := fmt.Sprintf("%s_%d.svg", slug(r.Benchmark+"_"+r.Measure), i)
			if err := os.WriteFile(filepath.Join(plots, name), []byte(svg(h)), 0o644); err != nil {
				return err
			}
			plotted = append(plotted, fmt.Sprintf("### %s\n\n![%s](plots/%s)\n", h.Title, h.Title, name))
		}
	}
	if len(plotted) > 0 {
		b.WriteString("\n## Latency histograms\n\nLatency from when each request was due (open loop, so a slow answer delays no later request), on a log scale; tailor and its floor in the same run.\n\n")
		b.WriteString(strings.Join(plotted, "\n"))
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// svg draws a histogram's series as step lines over logarithmic latency
// buckets, with each series' p50 and p99 in the legend.
func svg(h benchrec.Histogram) string {
	const w, ht, left, right, top, bottom = 720.0, 300.0, 60.0, 20.0, 40.0, 40.0
	colors := []string{"#888888", "#d62728", "#1f77b4", "#2ca02c"}
	// The range that holds samples, padded by a bucket.
	lo, hi := math.MaxInt, 0
	maxShare := 0.0
	for _, s := range h.Series {
		total := 0
		for _, c := range s.Counts {
			total += c
		}
		for i, c := range s.Counts {
			if c > 0 {
				lo, hi = min(lo, i), max(hi, i)
				maxShare = math.Max(maxShare, float64(c)/float64(max(total, 1)))
			}
		}
	}
	if hi < lo {
		return `<svg xmlns="http://www.w3.org/2000/svg" width="720" height="60"><text x="10" y="30">no samples</text></svg>`
	}
	lo, hi = max(0, lo-1), min(len(benchrec.Bounds), hi+1)
	n := hi - lo + 1
	x := func(i int) float64 { return left + (w-left-right)*float64(i-lo)/float64(n) }
	y := func(share float64) float64 { return top + (ht-top-bottom)*(1-share/maxShare) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", w, ht)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%g" y="20" font-size="14">%s</text>`+"\n", left, esc(h.Title))
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, ht-bottom, w-right, ht-bottom)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, top, left, ht-bottom)
	// Ticks at each decade.
	for i := lo; i <= hi && i < len(benchrec.Bounds); i++ {
		v := benchrec.Bounds[i]
		if d := math.Log10(v); math.Abs(d-math.Round(d)) < 1e-6 {
			fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#ccc"/><text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n",
				x(i+1), top, x(i+1), ht-bottom, x(i+1), ht-bottom+16, micros(v))
		}
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">latency</text>`+"\n", (left+w-right)/2, ht-6)
	fmt.Fprintf(&b, `<text x="14" y="%g" transform="rotate(-90 14 %g)" text-anchor="middle">share of requests</text>`+"\n", (top+ht-bottom)/2, (top+ht-bottom)/2)
	for k, s := range h.Series {
		total := 0
		for _, c := range s.Counts {
			total += c
		}
		var pts []string
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(lo), y(0)))
		for i := lo; i <= hi && i < len(s.Counts); i++ {
			share := float64(s.Counts[i]) / float64(max(total, 1))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x(i), y(share), x(i+1), y(share)))
		}
		color := colors[k%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="12" height="12" fill="%s"/><text x="%g" y="%g">%s: p50 %s, p99 %s, p99.9 %s (%d requests)</text>`+"\n",
			w-right-330, top+4+float64(k)*18, color, w-right-314, top+14+float64(k)*18, esc(s.Name), micros(s.P50), micros(s.P99), micros(s.P999), total)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func micros(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gms", v/1e3)
	}
	return fmt.Sprintf("%.3gµs", v)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
