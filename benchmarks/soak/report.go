package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

// The flatness criterion. The samples taken after the warm-up, while the
// load runs, are cut into thirds; a measure is flat when the median of the
// last third is at most the median of the first third plus the larger of
// a share of it and an absolute slack. A leak raises the level steadily
// and fails it; the noise of a garbage collector's cycle, an allocator
// returning memory, or a few samples of a stall (goroutines pile up with
// the requests in flight while the machine is crowded) does not: a median
// ignores them where a mean would not.
const (
	rssSlackShare       = 0.10
	rssSlackBytes       = 32 << 20
	goroutineSlackShare = 0.10
	goroutineSlack      = 20
	// minFlatSamples is the fewest samples after the warm-up that can be
	// judged (one per third).
	minFlatSamples = 3
)

// criterionText states the criterion, for the summary and -help alike.
const criterionText = "after the warm-up, the median of the last third of the samples is at most the median of the first third " +
	"plus the larger of 10% and 32 MiB (RSS) or of 10% and 20 (goroutines)"

// flatness is one measure judged by the criterion.
type flatness struct {
	measure     string
	n           int // samples judged
	first, last float64
	allowed     float64
	ok          bool
	format      func(float64) string
	// firstFrom and lastFrom are when the first and the last third begin.
	firstFrom, lastFrom time.Duration
}

// judgeFlat applies the criterion to a measure's values over samples.
func judgeFlat(measure string, samples []sample, value func(sample) float64, share, slack float64, format func(float64) string) flatness {
	f := flatness{measure: measure, n: len(samples), format: format}
	if f.n < minFlatSamples {
		return f
	}
	third := f.n / 3
	vals := make([]float64, f.n)
	for i, s := range samples {
		vals[i] = value(s)
	}
	f.first, f.last = median(vals[:third]), median(vals[f.n-third:])
	f.allowed = f.first + max(share*f.first, slack)
	f.ok = f.last <= f.allowed
	f.firstFrom, f.lastFrom = samples[0].at, samples[f.n-third].at
	return f
}

// median is the middle of xs (the mean of the two middle values for an
// even count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// afterWarmup are the complete samples taken after the warm-up while the
// load ran.
func afterWarmup(samples []sample, warmup, duration time.Duration) []sample {
	var out []sample
	for _, s := range samples {
		if s.at >= warmup && s.at <= duration && s.err == nil {
			out = append(out, s)
		}
	}
	return out
}

// report is the summary of a soak and its verdict.
type report struct {
	markdown string
	pass     bool
	samples  []sample
}

// newReport judges a soak and writes its summary.
func newReport(cfg config, res *result) report {
	judged := afterWarmup(res.samples, cfg.warmup, cfg.duration)
	flats := []flatness{
		judgeFlat("server RSS (VmRSS)", judged, func(s sample) float64 { return float64(s.rss) }, rssSlackShare, rssSlackBytes, mib),
		judgeFlat("goroutines", judged, func(s sample) float64 { return s.m.get(mGoroutines) }, goroutineSlackShare, goroutineSlack, count),
	}
	var why []string
	if res.interrupted {
		why = append(why, fmt.Sprintf("interrupted after %s of %s", res.elapsed.Round(time.Second), cfg.duration))
	}
	failed := 0
	for _, s := range res.rec.ops {
		failed += s.failed
	}
	if failed > 0 {
		why = append(why, fmt.Sprintf("%d requests failed", failed))
	}
	for _, f := range flats {
		switch {
		case f.n < minFlatSamples:
			why = append(why, fmt.Sprintf("%s: %d samples after the warm-up, %d needed (run longer than -warmup + %d x -sample)", f.measure, f.n, minFlatSamples, minFlatSamples))
		case !f.ok:
			why = append(why, fmt.Sprintf("%s grew: %s -> %s, allowed %s", f.measure, f.format(f.first), f.format(f.last), f.format(f.allowed)))
		}
	}
	if res.stop.killed || res.stop.err != nil {
		why = append(why, fmt.Sprintf("tailor serve did not exit cleanly on SIGTERM: %s", stopText(res.stop)))
	}
	var b strings.Builder
	writeHeader(&b, cfg, res, why)
	writeRequests(&b, cfg, res)
	writeFailures(&b, res)
	writeServer(&b, cfg, res, judged)
	writeFlatness(&b, flats)
	return report{markdown: b.String(), pass: len(why) == 0, samples: append(slices.Clone(res.samples), res.final)}
}

func count(x float64) string { return fmt.Sprintf("%.0f", x) }

func stopText(s stopResult) string {
	switch {
	case s.killed:
		return fmt.Sprintf("still running %s after SIGTERM, killed", stopGrace)
	case s.err != nil:
		return fmt.Sprintf("%v after %s", s.err, s.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("exited 0 in %s", s.took.Round(time.Millisecond))
}

func writeHeader(b *strings.Builder, cfg config, res *result, why []string) {
	fmt.Fprintf(b, "# tailor soak, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(b, "`%s` at %s on %s (%s at the start; %s at the end).\n\n",
		strings.Join(os.Args, " "), revision(), benchrec.Machine(), res.loadAvg[0], res.loadAvg[1])
	pick := "uniformly"
	if cfg.zipf > 0 {
		pick = fmt.Sprintf("by a Zipf law of exponent %g", cfg.zipf)
	}
	fmt.Fprintf(b, "`tailor serve --online-memory %s %s`; %d customers (two profile rows and one activity row each), drawn %s, "+
		"1 to %d per GetOnlineFeatures with %g%% unknown; %d clients at %g requests/s (%s), %s, warm-up %s, a sample every %s.\n\n",
		cfg.onlineMemory, strings.Join(cfg.serveArgs, " "), cfg.keys, pick, cfg.rows, 100*cfg.unknown,
		cfg.clients, cfg.rate, cfg.mix, cfg.duration, cfg.warmup, cfg.interval)
	if p := maxPressure(res.samples); p >= crowded {
		fmt.Fprintf(b, "The machine was crowded: its CPU pressure reached %.0f%% (some task waiting for a CPU that share of 10 s); "+
			"latencies, and DeadlineExceeded failures, are partly other processes' doing.\n\n", p)
	}
	if len(why) == 0 {
		b.WriteString("**PASS**: no request failed, and RSS and goroutines stayed flat after the warm-up.\n\n")
		return
	}
	b.WriteString("**FAIL**:\n\n")
	for _, y := range why {
		fmt.Fprintf(b, "- %s\n", y)
	}
	b.WriteString("\n")
}

// crowded is the CPU pressure (percent) from which the summary warns that
// other processes moved the figures.
const crowded = 50

// maxPressure is the highest CPU pressure the samples saw.
func maxPressure(samples []sample) float64 {
	m := -1.0
	for _, s := range samples {
		m = max(m, s.pressure)
	}
	return m
}

// revision is the checkout's commit, "-dirty" when it has changes.
func revision() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "an unknown revision"
	}
	return "revision " + strings.TrimSpace(string(out))
}

func writeRequests(b *strings.Builder, cfg config, res *result) {
	b.WriteString("## Requests\n\nLatency counts from when a request was due on its client's schedule; failed requests are left out of it. " +
		"The server's own p50 and p99 (tailor_rpc_duration_seconds, every request) are bucket bounds.\n\n")
	b.WriteString("| RPC | requests | failed | per second | p50 | p99 | p99.9 | max | server p50 | server p99 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var all []time.Duration
	allFailed := 0
	// match picks the server's series of the row's RPCs.
	row := func(name string, lat []time.Duration, failed int, match string) {
		sorted := slices.Sorted(slices.Values(lat))
		n := len(lat) + failed
		fmt.Fprintf(b, "| %s | %d | %d | %.1f | %s | %s | %s | %s | %s | %s |\n", name, n, failed, float64(n)/res.elapsed.Seconds(),
			ms(percentile(sorted, 0.5)), ms(percentile(sorted, 0.99)), ms(percentile(sorted, 0.999)), ms(percentile(sorted, 1)),
			secondsText(histQuantile(res.begin, res.final.m, mRPCSeconds, match, 0.5)), secondsText(histQuantile(res.begin, res.final.m, mRPCSeconds, match, 0.99)))
	}
	for o := range numOps {
		s := res.rec.ops[o]
		if len(s.latencies)+s.failed == 0 {
			continue
		}
		row(opNames[o], s.latencies, s.failed, `procedure="`+opProcedures[o]+`"`)
		all = append(all, s.latencies...)
		allFailed += s.failed
	}
	row("all", all, allFailed, `procedure="/tailor.`)
	fmt.Fprintf(b, "\n%.1f requests/s achieved of the %g asked, over %s", float64(len(all)+allFailed)/res.elapsed.Seconds(), cfg.rate, res.elapsed.Round(time.Millisecond))
	if gu := res.rec.gaveUp; gu.answered+gu.expired > 0 {
		fmt.Fprintf(b, "; besides, %d requests sent with a deadline of 1 to %s (-abandon %g): %d answered in time, %d ended by it",
			gu.answered+gu.expired, abandonWithin+time.Millisecond, cfg.abandon, gu.answered, gu.expired)
	}
	if res.rec.waits > 0 {
		fmt.Fprintf(b, "; %d requests waited because their client had %d outstanding (the server fell behind)", res.rec.waits, maxInFlight)
	}
	b.WriteString(".\n\n")
}

func writeFailures(b *strings.Builder, res *result) {
	b.WriteString("## Failures\n\n")
	if len(res.rec.order) == 0 {
		b.WriteString("None.\n\n")
		return
	}
	b.WriteString("By RPC, code and message (numbers blanked out to group them); up to three examples each.\n\n")
	b.WriteString("| RPC | code | count | first | last | examples |\n| --- | --- | ---: | ---: | ---: | --- |\n")
	for _, k := range res.rec.order {
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s |\n", opNames[k.op], k.code, k.count,
			k.first.Round(100*time.Millisecond), k.last.Round(100*time.Millisecond), cell(strings.Join(k.examples, " / ")))
	}
	b.WriteString("\n")
}

// cell makes text safe in a table cell.
func cell(s string) string {
	s = strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return "`" + strings.ReplaceAll(s, "`", "'") + "`"
}

// writeServer reports the server: memory and goroutines at the end of the
// warm-up, at the end and at their peak, the tier, the codes the server
// counted, its prediction log, its own log and how it stopped.
func writeServer(b *strings.Builder, cfg config, res *result, judged []sample) {
	b.WriteString("## Server\n\n")
	var warm sample
	if len(judged) > 0 {
		warm = judged[0]
	}
	end := res.final
	maxOf := func(v func(sample) float64) float64 {
		m := v(end)
		for _, s := range res.samples {
			m = max(m, v(s))
		}
		return m
	}
	type measure struct {
		name    string
		v, peak func(sample) float64 // peak: nil when it is v's maximum over the samples
		format  func(float64) string
	}
	b.WriteString("| measure | warm-up end | end | peak |\n| --- | ---: | ---: | ---: |\n")
	for _, m := range []measure{
		{"RSS (peak: VmHWM)", func(s sample) float64 { return float64(s.rss) }, func(s sample) float64 { return float64(s.hwm) }, mib},
		{"Go heap in use", func(s sample) float64 { return s.m.get(mHeapInuse) }, nil, mib},
		{"goroutines", func(s sample) float64 { return s.m.get(mGoroutines) }, nil, count},
		{"threads", func(s sample) float64 { return float64(s.threads) }, nil, count},
		{"online tier bytes", func(s sample) float64 { return s.m.get(mTierBytes) }, nil, mib},
		{"online tier entries", func(s sample) float64 { return s.m.get(mTierEntries) }, nil, count},
		{"ClickHouse RSS", func(s sample) float64 { return float64(s.chRSS) }, nil, mib},
	} {
		if m.peak == nil {
			m.peak = m.v
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", m.name, m.format(m.v(warm)), m.format(m.v(end)), m.format(maxOf(m.peak)))
	}
	budget := end.m.get(mTierBudget)
	fmt.Fprintf(b, "\nPeak RSS %s is %.1fx the tier's budget (--online-memory %s, %s) and %.1fx the Go heap in use at the end; "+
		"RSS at the end is %.1fx the tier's bytes.\n\n",
		mib(float64(end.hwm)), ratio(float64(end.hwm), budget), cfg.onlineMemory, mib(budget),
		ratio(float64(end.hwm), end.m.get(mHeapInuse)), ratio(float64(end.rss), end.m.get(mTierBytes)))
	fmt.Fprintf(b, "CPU during the load: the server %.0f%% of a core, the soak's clients %.0f%%.\n\n",
		100*(end.cpu-res.beginCPU[0]).Seconds()/res.elapsed.Seconds(), 100*res.selfCPU.Seconds()/res.elapsed.Seconds())
	writeTier(b, res)
	writeServerCodes(b, end)
	writePredLog(b, end)
	writeServerLog(b, res.serverLog)
	fmt.Fprintf(b, "SIGTERM: %s.\n\n", stopText(res.stop))
}

// writeTier reports the tier's traffic during the load: hits, misses,
// read-throughs, evictions.
func writeTier(b *strings.Builder, res *result) {
	d := func(name string) float64 { return res.final.m.get(name) - res.begin.get(name) }
	hits, misses := d(mTierHits), d(mTierMisses)
	secs := res.elapsed.Seconds()
	fmt.Fprintf(b, "Online tier during the load (it began with %.0f entries, %s): %.1f%% hits of %.0f lookups, "+
		"%.0f read-through queries (%.1f/s; p50 <= %s, p99 <= %s), %.0f evictions (%.1f/s).\n\n",
		res.begin.get(mTierEntries), mib(res.begin.get(mTierBytes)), 100*ratio(hits, hits+misses), hits+misses,
		d(mReadThroughs), d(mReadThroughs)/secs,
		secondsText(histQuantile(res.begin, res.final.m, mReadThroughSecs, "", 0.5)), secondsText(histQuantile(res.begin, res.final.m, mReadThroughSecs, "", 0.99)),
		d(mEvictions), d(mEvictions)/secs)
	polls := res.final.m.labelled(mFollowPolls)
	fmt.Fprintf(b, "Follower during the load: %.0f polls (%.0f failed), %.0f cached rows refreshed.\n\n",
		d(mFollowPolls), polls[`result="error"`]-res.begin.labelled(mFollowPolls)[`result="error"`], d(mFollowRefreshed))
}

// histQuantile estimates the q-quantile of the observations a
// Prometheus histogram made between two scrapes, over its series whose
// labels contain match ("" for all): the upper bound of the first bucket
// reaching it (+Inf beyond the last bound, NaN without observations).
func histQuantile(before, after metrics, name, match string, q float64) float64 {
	counts := map[float64]float64{}
	prev := before.labelled(name + "_bucket")
	for labels, v := range after.labelled(name + "_bucket") {
		m := leLabel.FindStringSubmatch(labels)
		if m == nil || !strings.Contains(labels, match) {
			continue
		}
		bound, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		counts[bound] += v - prev[labels]
	}
	bounds := slices.Sorted(maps.Keys(counts))
	if len(bounds) == 0 || counts[bounds[len(bounds)-1]] == 0 {
		return math.NaN()
	}
	want := q * counts[bounds[len(bounds)-1]]
	for _, le := range bounds {
		if counts[le] >= want {
			return le
		}
	}
	return math.Inf(1)
}

var leLabel = regexp.MustCompile(`le="([^"]*)"`)

// secondsText formats a histogram bound in milliseconds.
func secondsText(s float64) string {
	switch {
	case math.IsNaN(s):
		return "n/a"
	case math.IsInf(s, 1):
		return "+Inf"
	}
	return fmt.Sprintf("%.1fms", s*1000)
}

// writeServerCodes reports what the server itself counted other than ok.
func writeServerCodes(b *strings.Builder, end sample) {
	codes := regexp.MustCompile(`code="([^"]*)",procedure="([^"]*)"`)
	var lines []string
	for labels, v := range end.m.labelled(mRPCRequests) {
		if m := codes.FindStringSubmatch(labels); m != nil && m[1] != "ok" && v > 0 {
			lines = append(lines, fmt.Sprintf("%s %s: %.0f", m[2], m[1], v))
		}
	}
	slices.Sort(lines)
	if len(lines) == 0 {
		b.WriteString("The server counted no RPC ending other than ok (tailor_rpc_requests_total, setup included).\n\n")
		return
	}
	fmt.Fprintf(b, "RPCs the server counted ending other than ok (tailor_rpc_requests_total, setup included): %s.\n\n", strings.Join(lines, "; "))
}

func writePredLog(b *strings.Builder, end sample) {
	recs := end.m.labelled(mPredLog)
	fmt.Fprintf(b, "Prediction log records: %.0f written, %.0f dropped, %.0f failed.\n\n",
		recs[`result="written"`], recs[`result="dropped"`], recs[`result="failed"`])
}

// logSummary is the warnings and errors of the server's log, by message.
type logSummary struct {
	warnings, errors int
	kinds            []logKind
}

type logKind struct {
	level, msg string
	count      int
	example    string
}

var logMsg = regexp.MustCompile(`level=(WARN|ERROR) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// scanServerLog reads the server's log (slog text lines) for warnings and
// errors.
func scanServerLog(path string) logSummary {
	var s logSummary
	f, err := os.Open(path)
	if err != nil {
		return s
	}
	defer f.Close()
	byMsg := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		m := logMsg.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if m[1] == "WARN" {
			s.warnings++
		} else {
			s.errors++
		}
		key := m[1] + " " + m[2]
		i, ok := byMsg[key]
		if !ok {
			i = len(s.kinds)
			byMsg[key] = i
			s.kinds = append(s.kinds, logKind{level: m[1], msg: m[2], example: sc.Text()})
		}
		s.kinds[i].count++
	}
	return s
}

func writeServerLog(b *strings.Builder, s logSummary) {
	if len(s.kinds) == 0 {
		b.WriteString("The server logged no warning or error.\n\n")
		return
	}
	fmt.Fprintf(b, "The server logged %d warnings and %d errors:\n\n| level | message | count | first |\n| --- | --- | ---: | --- |\n", s.warnings, s.errors)
	for _, k := range s.kinds {
		fmt.Fprintf(b, "| %s | %s | %d | %s |\n", k.level, cell(k.msg), k.count, cell(k.example))
	}
	b.WriteString("\n")
}

func writeFlatness(b *strings.Builder, flats []flatness) {
	fmt.Fprintf(b, "## Flat after the warm-up\n\nCriterion: %s.\n\n", criterionText)
	b.WriteString("| measure | samples | first third (from) | last third (from) | allowed | flat |\n| --- | ---: | ---: | ---: | ---: | --- |\n")
	for _, f := range flats {
		if f.n < minFlatSamples {
			fmt.Fprintf(b, "| %s | %d | | | | too few samples |\n", f.measure, f.n)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %s (%s) | %s (%s) | %s | %s |\n", f.measure, f.n,
			f.format(f.first), f.firstFrom.Round(time.Second), f.format(f.last), f.lastFrom.Round(time.Second),
			f.format(f.allowed), map[bool]string{true: "yes", false: "**no**"}[f.ok])
	}
	b.WriteString("\n")
}

// write saves the summary to out, the samples beside it as CSV, and a
// copy of the server's log.
func (r report) write(out, serverLog string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, []byte(r.markdown), 0o644); err != nil {
		return err
	}
	if err := writeSamples(sibling(out, "-samples.csv"), r.samples); err != nil {
		return err
	}
	return copyFile(serverLog, sibling(out, "-server.log"))
}

// writeSamples writes one CSV row per sample.
func writeSamples(path string, samples []sample) error {
	rows := [][]string{{"t_s", "rss_bytes", "hwm_bytes", "process_resident_memory_bytes", "heap_inuse_bytes", "goroutines", "threads", "cpu_s",
		"tier_bytes", "tier_entries", "tier_hits", "tier_misses", "read_throughs", "evictions", "follow_polls", "follow_refreshed", "clickhouse_rss_bytes", "machine_cpu_pressure_pct"}}
	for o := range numOps {
		rows[0] = append(rows[0], opFlags[o]+"_answered", opFlags[o]+"_failed", opFlags[o]+"_p50_ms", opFlags[o]+"_p99_ms")
	}
	for _, s := range samples {
		row := []string{fmt.Sprintf("%.1f", s.at.Seconds()), fmt.Sprint(s.rss), fmt.Sprint(s.hwm), count(s.m.get(mProcessRSS)),
			count(s.m.get(mHeapInuse)), count(s.m.get(mGoroutines)), fmt.Sprint(s.threads), fmt.Sprintf("%.2f", s.cpu.Seconds()),
			count(s.m.get(mTierBytes)), count(s.m.get(mTierEntries)), count(s.m.get(mTierHits)), count(s.m.get(mTierMisses)),
			count(s.m.get(mReadThroughs)), count(s.m.get(mEvictions)), count(s.m.get(mFollowPolls)), count(s.m.get(mFollowRefreshed)), fmt.Sprint(s.chRSS), fmt.Sprintf("%.1f", s.pressure)}
		for _, win := range s.ops {
			row = append(row, fmt.Sprint(win.answered), fmt.Sprint(win.failed),
				fmt.Sprintf("%.3f", win.p50.Seconds()*1000), fmt.Sprintf("%.3f", win.p99.Seconds()*1000))
		}
		rows = append(rows, row)
	}
	return writeCSV(path, rows)
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
