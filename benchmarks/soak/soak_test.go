package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// The soak itself runs for minutes (make soak); these tests cover its
// judgement: the mix, the flatness criterion, the metrics it reads and the
// way it groups failures.

func TestParseMix(t *testing.T) {
	m, err := parseMix("get=3, push=1,nba=0")
	if err != nil {
		t.Fatal(err)
	}
	if m != (mix{3, 1, 0, 0}) {
		t.Fatalf("mix %v", m)
	}
	if got := m.String(); got != "get 75%, push 25%" {
		t.Fatalf("String() = %q", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var n [numOps]int
	for range 4000 {
		n[m.pick(rng)]++
	}
	if n[opPredict]+n[opNBA] != 0 || n[opGet] < 2800 || n[opGet] > 3200 {
		t.Fatalf("drawn %v of 4000 with weights 3:1", n)
	}
	for _, bad := range []string{"", "get=0", "get=-1", "fetch=1", "get"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
}

func samplesOf(vals ...float64) []sample {
	out := make([]sample, len(vals))
	for i, v := range vals {
		out[i] = sample{at: time.Duration(60+5*i) * time.Second, rss: int64(v)}
	}
	return out
}

func TestJudgeFlat(t *testing.T) {
	rss := func(s sample) float64 { return float64(s.rss) }
	const m = 1 << 20
	for _, c := range []struct {
		name string
		vals []float64
		ok   bool
	}{
		{"flat", []float64{500 * m, 520 * m, 480 * m, 510 * m, 505 * m, 515 * m}, true},
		// 500 MiB + 10% = 550 MiB.
		{"within 10%", []float64{500 * m, 500 * m, 520 * m, 540 * m, 545 * m, 549 * m}, true},
		{"leak", []float64{500 * m, 500 * m, 540 * m, 560 * m, 580 * m, 600 * m}, false},
		// Small: the absolute 32 MiB slack applies, not 10% of 100 MiB.
		{"small, within 32 MiB", []float64{100 * m, 100 * m, 120 * m, 130 * m}, true},
		{"small, beyond 32 MiB", []float64{100 * m, 100 * m, 120 * m, 140 * m}, false},
		// Only the first and last thirds count; a peak between them does not.
		{"peak in the middle", []float64{500 * m, 500 * m, 900 * m, 900 * m, 500 * m, 500 * m}, true},
		// A stall of two samples in the last third does not move its median.
		{"spike at the end", []float64{500 * m, 510 * m, 505 * m, 500 * m, 505 * m, 510 * m, 500 * m, 505 * m, 500 * m, 500 * m,
			500 * m, 900 * m, 505 * m, 900 * m, 510 * m}, true},
		{"level raised at the end", []float64{500 * m, 510 * m, 505 * m, 500 * m, 505 * m, 510 * m, 500 * m, 505 * m, 500 * m, 500 * m,
			600 * m, 610 * m, 605 * m, 600 * m, 610 * m}, false},
	} {
		f := judgeFlat("rss", samplesOf(c.vals...), rss, rssSlackShare, rssSlackBytes, mib)
		if f.ok != c.ok {
			t.Errorf("%s: ok = %v (first %s, last %s, allowed %s), want %v", c.name, f.ok, mib(f.first), mib(f.last), mib(f.allowed), c.ok)
		}
	}
	if f := judgeFlat("rss", samplesOf(1, 2), rss, rssSlackShare, rssSlackBytes, mib); f.ok || f.n != 2 {
		t.Errorf("two samples judged: %+v", f)
	}
}

func TestAfterWarmup(t *testing.T) {
	s := samplesOf(1, 2, 3, 4) // at 60, 65, 70, 75 s
	s[2].err = errors.New("scrape failed")
	got := afterWarmup(s, 65*time.Second, 75*time.Second)
	if len(got) != 2 || got[0].at != 65*time.Second || got[1].at != 75*time.Second {
		t.Fatalf("kept %v", got)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
tailor_rpc_requests_total{code="ok",procedure="/a"} 10
tailor_rpc_requests_total{code="unavailable",procedure="/a"} 2
tailor_prediction_log_records_total{result="written"} 1.5e+06
weird{label="a } b"} 3 1700000000
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m.get(mGoroutines) != 42 || m.get(mRPCRequests) != 12 || m.get("missing") != 0 || m.get("weird") != 3 {
		t.Fatalf("parsed %v", m)
	}
	if got := m.labelled(mPredLog)[`result="written"`]; got != 1.5e6 {
		t.Fatalf("prediction log written = %v", got)
	}
	if _, err := parseMetrics(strings.NewReader("name notanumber\n")); err == nil {
		t.Fatal("a bad value was accepted")
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i))
	}
	if percentile(xs, 0.5) != 50 || percentile(xs, 0.99) != 99 || percentile(xs, 1) != 100 || percentile(nil, 0.5) != 0 {
		t.Fatal("nearest-rank percentiles are off")
	}
}

func TestRecorderGroupsFailures(t *testing.T) {
	r := newRecorder(time.Now())
	closed := func(port int) error {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("read tcp 127.0.0.1:%d->127.0.0.1:9000: use of closed network connection", port))
	}
	r.done(opGet, time.Millisecond, nil)
	r.done(opGet, time.Millisecond, closed(40001))
	r.done(opGet, time.Millisecond, closed(40002))
	r.done(opPush, time.Millisecond, closed(40003))
	r.done(opGet, time.Millisecond, wrong("row 0 has 3 values of 4"))
	if len(r.order) != 3 {
		t.Fatalf("%d kinds, want 3 (closed connection on Get and on Push, a wrong answer)", len(r.order))
	}
	k := r.order[0]
	if k.op != opGet || k.code != "unavailable" || k.count != 2 || len(k.examples) != 2 {
		t.Fatalf("first kind %+v", k)
	}
	if r.order[2].code != "wrong answer" {
		t.Fatalf("third kind %+v", r.order[2])
	}
	if r.ops[opGet].failed != 3 || len(r.ops[opGet].latencies) != 1 {
		t.Fatalf("Get: %d failed, %d answered", r.ops[opGet].failed, len(r.ops[opGet].latencies))
	}
}

func TestCheckGet(t *testing.T) {
	present := &featurestorev1.FeatureValue{Status: featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT, Value: stringValue("x")}
	old := &featurestorev1.FeatureValue{Status: featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE}
	missing := &featurestorev1.FeatureValue{Status: featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND}
	req := &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{
		FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"profile:f0", "activity:device"}}}}
	resp := func(rows ...[]*featurestorev1.FeatureValue) *featurestorev1.GetOnlineFeaturesResponse {
		r := &featurestorev1.GetOnlineFeaturesResponse{FeatureNames: []string{"f0", "device"}}
		for _, vs := range rows {
			r.Rows = append(r.Rows, &featurestorev1.OnlineRow{Values: vs})
		}
		return r
	}
	if err := checkGet(req, []bool{true, true, false}, resp(
		[]*featurestorev1.FeatureValue{present, present},
		[]*featurestorev1.FeatureValue{present, old},
		[]*featurestorev1.FeatureValue{missing, missing})); err != nil {
		t.Fatalf("a right answer: %v", err)
	}
	for name, r := range map[string]*featurestorev1.GetOnlineFeaturesResponse{
		"profile too old":         resp([]*featurestorev1.FeatureValue{old, present}),
		"known customer missing":  resp([]*featurestorev1.FeatureValue{present, missing}),
		"a row short":             resp(),
		"a value short":           resp([]*featurestorev1.FeatureValue{present}),
		"present without a value": resp([]*featurestorev1.FeatureValue{{Status: featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT}, present}),
	} {
		var w *wrongAnswer
		if err := checkGet(req, []bool{true}, r); !errors.As(err, &w) {
			t.Errorf("%s: %v, want a wrong answer", name, err)
		}
	}
}

func TestHistQuantile(t *testing.T) {
	before, err := parseMetrics(strings.NewReader(`h_bucket{le="0.001"} 5
h_bucket{le="0.01"} 5
h_bucket{le="+Inf"} 5
h_sum 0.004
h_count 5
by_bucket{procedure="/a",le="0.001"} 1
by_bucket{procedure="/a",le="+Inf"} 1
`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseMetrics(strings.NewReader(`h_bucket{le="0.001"} 55
h_bucket{le="0.01"} 104
h_bucket{le="+Inf"} 105
by_bucket{procedure="/a",le="0.001"} 1
by_bucket{procedure="/a",le="+Inf"} 3
by_bucket{procedure="/b",le="0.001"} 10
by_bucket{procedure="/b",le="+Inf"} 10
`))
	if err != nil {
		t.Fatal(err)
	}
	// 100 observations since before: 50 up to 1 ms, 49 up to 10 ms, 1 above.
	for q, want := range map[float64]float64{0.5: 0.001, 0.9: 0.01, 0.99: 0.01} {
		if got := histQuantile(before, after, "h", "", q); got != want {
			t.Errorf("q%.2f = %v, want %v", q, got, want)
		}
	}
	if got := histQuantile(before, after, "h", "", 1); !math.IsInf(got, 1) {
		t.Errorf("q1 = %v, want +Inf", got)
	}
	if got := histQuantile(after, after, "h", "", 0.5); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
	// By procedure: /a made 2 observations since, both above 1 ms; /b 10
	// within 1 ms; together 12.
	if got := histQuantile(before, after, "by", `procedure="/a"`, 0.5); !math.IsInf(got, 1) {
		t.Errorf("/a median %v, want +Inf", got)
	}
	if got := histQuantile(before, after, "by", "", 0.5); got != 0.001 {
		t.Errorf("median of both %v, want 0.001", got)
	}
}
