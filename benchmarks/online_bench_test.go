package benchmarks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// The online benchmarks' clients speak the Connect protocol with binary
// protobuf over cleartext HTTP/2. Unless a sub-benchmark's name says gzip,
// they do not accept gzip: connect-go clients accept it by default, and
// handlers then compress every response however small, which on this
// path costs more than the lookup (the gzip sub-benchmarks show how much);
// identity encoding is what a gRPC client sends by default and what the
// figures below compare.
var identity = connect.WithAcceptCompression("gzip", nil, nil)

// startOnlinePair loads the online data set and starts `tailor serve` with
// every key warm, and the echo server answering with a real 100-row
// response of that server (cut to each request's rows). Both stop when b
// ends.
func startOnlinePair(b *testing.B) (tailor, echo *serverProc) {
	b.Helper()
	e := setup(b)
	e.loadOnline(b)
	tailor = e.startTailorServe(b)
	req := onlineRequests(rand.New(rand.NewPCG(7, 7)), 1, 100)[0]
	resp, err := clientPool(tailor.base, 1, identity)[0].GetOnlineFeatures(context.Background(), connect.NewRequest(req))
	if err != nil {
		b.Fatal(err)
	}
	checkAnswer(b, req, resp.Msg)
	return tailor, e.startEcho(b, resp.Msg)
}

// checkNoReadThrough fails b if tailor went to ClickHouse for any key: the
// figures are of the in-memory path only.
func checkNoReadThrough(b *testing.B, tailor *serverProc) {
	b.Helper()
	if n := scrape(b, tailor.base, "tailor_online_read_through_queries_total"); n != 0 {
		b.Fatalf("%v read-through queries: the tier does not hold every key", n)
	}
}

// closedConns is the number of client goroutines of the closed-loop runs,
// each with its own h2c connection and one request in flight: enough to
// keep both cores of the benchmark machine busy (the client shares them
// with the server), few enough that queueing does not dominate.
const closedConns = 4

// closedLoop sends n requests over clients, one in flight per client, and
// returns the wall time and the number of failed or wrong-sized answers.
func closedLoop(clients []featurestorev1connect.FeatureServiceClient, reqs []*featurestorev1.GetOnlineFeaturesRequest, n int) (time.Duration, int64) {
	return closedLoopFunc(len(clients), n, func(g, i int) bool {
		req := reqs[i%len(reqs)]
		resp, err := clients[g].GetOnlineFeatures(context.Background(), connect.NewRequest(req))
		return err == nil && len(resp.Msg.GetRows()) == len(req.GetEntities())
	})
}

// BenchmarkGetOnlineFeatures measures the CPU `tailor serve` spends per
// GetOnlineFeatures of 20 features for 1 and 100 entity rows, all held in
// its tier, against the floor of an echo server: the same Connect handler
// stack, the same request decoding, answering a pre-built response of the
// same shape without a lookup.
//
// Server CPU is the user + system time of the server process
// (/proc/PID/stat) over the run; its tick is 10 ms, so every run holds a
// few hundred ticks. The client runs closedConns goroutines on their own
// connections; ns/op is the client's wall time per request (inverse
// throughput, as with b.RunParallel). The two servers alternate in rounds
// so that drift on the shared machine hits both alike. client-cpu-µs/op,
// B/op and allocs/op are the benchmark process's own, per tailor request:
// the client shares the machine's cores with the server.
func BenchmarkGetOnlineFeatures(b *testing.B) {
	tailor, echo := startOnlinePair(b)
	rng := rand.New(rand.NewPCG(1, 2))
	const rounds = 4
	for _, c := range []struct {
		name           string
		rows, requests int
		opts           []connect.ClientOption
	}{
		{"rows=1", 1, 16_000, []connect.ClientOption{identity}},
		{"rows=100", 100, 2_000, []connect.ClientOption{identity}},
		{"rows=1,gzip", 1, 8_000, nil},
		{"rows=100,gzip", 100, 800, nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			reqs := onlineRequests(rng, 512, c.rows)
			servers := []*serverProc{echo, tailor}
			clients := make([][]featurestorev1connect.FeatureServiceClient, len(servers))
			var size [2]int
			for k, s := range servers {
				clients[k] = clientPool(s.base, closedConns, c.opts...)
				resp, err := clients[k][0].GetOnlineFeatures(context.Background(), connect.NewRequest(reqs[0]))
				if err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				checkAnswer(b, reqs[0], resp.Msg)
				size[k] = proto.Size(resp.Msg)
				closedLoop(clients[k], reqs, c.requests/10) // warm up: connections, heaps, pools
			}
			var cpu, wall [2]time.Duration
			var n [2]int
			var clientCPU time.Duration
			var clientBytes, clientAllocsN uint64
			per := c.requests / rounds
			b.ResetTimer()
			for range b.N {
				for range rounds {
					for k, s := range servers {
						before, self := cpuTime(b, s.cmd.Process.Pid), cpuTime(b, os.Getpid())
						var w time.Duration
						var bad int64
						by, al := clientAllocs(func() { w, bad = closedLoop(clients[k], reqs, per) })
						cpu[k] += cpuTime(b, s.cmd.Process.Pid) - before
						if s == tailor {
							clientCPU += cpuTime(b, os.Getpid()) - self
						}
						if bad > 0 {
							b.Fatalf("%s: %d of %d requests failed", s.name, bad, per)
						}
						wall[k] += w
						n[k] += per
						if s == tailor {
							clientBytes += by
							clientAllocsN += al
						}
					}
				}
			}
			b.StopTimer()
			checkNoReadThrough(b, tailor)
			perOp := func(d time.Duration, k int) float64 { return float64(d) / float64(n[k]) }
			echoCPU, tailorCPU := perOp(cpu[0], 0)/1e3, perOp(cpu[1], 1)/1e3
			echoNs, tailorNs := perOp(wall[0], 0), perOp(wall[1], 1)
			b.ReportMetric(tailorNs, "ns/op")
			b.ReportMetric(echoNs, "echo-ns/op")
			b.ReportMetric(tailorNs/echoNs, "wall-ratio-vs-echo")
			b.ReportMetric(tailorCPU, "server-cpu-µs/op")
			b.ReportMetric(echoCPU, "echo-cpu-µs/op")
			b.ReportMetric(tailorCPU/echoCPU, "cpu-ratio-vs-echo")
			b.ReportMetric(perOp(clientCPU, 1)/1e3, "client-cpu-µs/op")
			b.ReportMetric(float64(clientBytes)/float64(n[1]), "B/op")
			b.ReportMetric(float64(clientAllocsN)/float64(n[1]), "allocs/op")
			record(b, benchrec.Result{Area: "online features", Measure: fmt.Sprintf("GetOnlineFeatures, %s x %d features: server CPU per request", c.name, onlineFeatures),
				Value: fmt.Sprintf("%.1f µs", tailorCPU), Floor: fmt.Sprintf("Connect echo of the same bytes: %.1f µs", echoCPU), Ratio: ratioText(tailorCPU / echoCPU),
				Target: "<= 1.5x", Met: benchrec.Met(tailorCPU/echoCPU <= 1.5)})
			b.Logf("GetOnlineFeatures %s x %d features (response %d B from tailor, %d B from echo), %d requests per server over %d connections, on %s:",
				c.name, onlineFeatures, size[1], size[0], n[1], closedConns, machine())
			b.Logf("  server CPU tailor %.1f µs/request, echo %.1f, ratio %.2fx (target <= 1.5x); client wall tailor %.1f µs/request, echo %.1f, ratio %.2fx; client CPU %.1f µs per tailor request",
				tailorCPU, echoCPU, tailorCPU/echoCPU, tailorNs/1e3, echoNs/1e3, tailorNs/echoNs, perOp(clientCPU, 1)/1e3)
		})
	}
}

// openConns is the number of h2c connections the open-loop generator
// spreads its requests over (round robin), as a decision service's pool
// of connections would; requests on one connection are multiplexed.
const openConns = 8

// openResult is the outcome of open-loop runs, one sample per scheduled
// request.
type openResult struct {
	latency []time.Duration // from the scheduled send time; failed when no valid answer
	lag     []time.Duration // scheduled send time to the request's start
	ok      int
	elapsed time.Duration // first scheduled send to last answer, summed over runs
}

// openLoop issues rate requests per second for d on a fixed schedule,
// whether or not earlier ones have been answered: request i is due at
// start + i/rate and runs in a goroutine of its own, and its latency is
// counted from when it was due, so a slow server cannot slow the offered
// load down and hide its own queueing (no coordinated omission). The
// dispatcher sleeps with nanosleep to keep to a sub-millisecond schedule;
// how late requests start (the generator's own share) is reported as lag.
func openLoop(clients []featurestorev1connect.FeatureServiceClient, reqs []*featurestorev1.GetOnlineFeaturesRequest, rate int, d time.Duration) openResult {
	return openLoopFunc(rate, d, func(ctx context.Context, i int) bool {
		req := reqs[i%len(reqs)]
		resp, err := clients[i%len(clients)].GetOnlineFeatures(ctx, connect.NewRequest(req))
		return err == nil && len(resp.Msg.GetRows()) == len(req.GetEntities())
	})
}

func (r *openResult) add(o openResult) {
	r.latency = append(r.latency, o.latency...)
	r.lag = append(r.lag, o.lag...)
	r.ok += o.ok
	r.elapsed += o.elapsed
}

// summary is the percentiles of an openResult.
type summary struct {
	p50, p99, p999, lag50, lag99 float64 // µs
	rps                          float64
	errors                       int
}

func (r openResult) summary() summary {
	lat, lag := sortedCopy(r.latency), sortedCopy(r.lag)
	return summary{
		p50: micros(percentile(lat, 0.5)), p99: micros(percentile(lat, 0.99)), p999: micros(percentile(lat, 0.999)),
		lag50: micros(percentile(lag, 0.5)), lag99: micros(percentile(lag, 0.99)),
		rps: float64(r.ok) / r.elapsed.Seconds(), errors: len(r.latency) - r.ok,
	}
}

// BenchmarkOnlineOpenLoop offers single-row requests for 20 features at
// fixed rates, open loop (see openLoop), to `tailor serve` and to the echo
// server as the floor, alternating one-second slices between the two so
// both see the same moments of the shared machine. It reports the latency
// percentiles seen by the client, the rate achieved, the failures and the
// generator's send lag, and tailor's p99 over the echo's. ns/op is
// suppressed (an iteration is a whole run); B/op and allocs/op are the
// client's per tailor request.
func BenchmarkOnlineOpenLoop(b *testing.B) {
	tailor, echo := startOnlinePair(b)
	reqs := onlineRequests(rand.New(rand.NewPCG(3, 4)), 4096, 1)
	const (
		warmUp = 300 * time.Millisecond
		slice  = time.Second
		slices = 4 // per server and iteration
	)
	for _, rate := range []int{1000, 2500, 5000} {
		b.Run(fmt.Sprintf("rps=%d", rate), func(b *testing.B) {
			servers := []*serverProc{echo, tailor}
			clients := make([][]featurestorev1connect.FeatureServiceClient, len(servers))
			for k, s := range servers {
				clients[k] = clientPool(s.base, openConns, identity)
				openLoop(clients[k], reqs, rate, warmUp)
			}
			results := make([]openResult, len(servers))
			var clientBytes, clientAllocsN uint64
			b.ResetTimer()
			for range b.N {
				for range slices {
					for k, s := range servers {
						var r openResult
						by, al := clientAllocs(func() { r = openLoop(clients[k], reqs, rate, slice) })
						if r.ok == 0 {
							b.Fatalf("%s: no request at %d rps was answered", s.name, rate)
						}
						results[k].add(r)
						if s == tailor {
							clientBytes += by
							clientAllocsN += al
						}
					}
				}
			}
			b.StopTimer()
			checkNoReadThrough(b, tailor)
			f, t := results[0].summary(), results[1].summary()
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(t.p50, "p50-µs")
			b.ReportMetric(t.p99, "p99-µs")
			b.ReportMetric(t.p999, "p99.9-µs")
			b.ReportMetric(t.rps, "achieved-rps")
			b.ReportMetric(float64(t.errors), "errors")
			b.ReportMetric(t.lag50, "send-lag-p50-µs")
			b.ReportMetric(t.lag99, "send-lag-p99-µs")
			b.ReportMetric(f.p50, "echo-p50-µs")
			b.ReportMetric(f.p99, "echo-p99-µs")
			b.ReportMetric(f.p999, "echo-p99.9-µs")
			b.ReportMetric(float64(f.errors), "echo-errors")
			b.ReportMetric(t.p99/f.p99, "p99-ratio-vs-echo")
			b.ReportMetric(float64(clientBytes)/float64(len(results[1].latency)), "B/op")
			b.ReportMetric(float64(clientAllocsN)/float64(len(results[1].latency)), "allocs/op")
			res := benchrec.Result{Area: "online features", Measure: fmt.Sprintf("GetOnlineFeatures open loop at %d rps, 1 row: p50 / p99 / p99.9", rate),
				Value: fmt.Sprintf("%.0f / %.0f / %.0f µs (%d errors)", t.p50, t.p99, t.p999, t.errors),
				Floor: fmt.Sprintf("echo: %.0f / %.0f / %.0f µs", f.p50, f.p99, f.p999), Ratio: "p99 " + ratioText(t.p99/f.p99),
				Histograms: []benchrec.Histogram{{Title: fmt.Sprintf("GetOnlineFeatures at %d rps, 1 row x %d features", rate, onlineFeatures),
					Series: []benchrec.Series{benchrec.NewSeries("echo", answered(results[0].latency)), benchrec.NewSeries("tailor", answered(results[1].latency))}}}}
			if rate == 5000 {
				res.Target, res.Met = "p99 <= 2 ms", benchrec.Met(t.p99 <= 2000)
			}
			record(b, res)
			b.Logf("open loop at %d rps, %d requests per server (1 row x %d features) over %d h2c connections, on %s:", rate, len(results[1].latency), onlineFeatures, openConns, machine())
			for k, s := range []summary{f, t} {
				b.Logf("  %-12s p50 %7.0f µs  p99 %7.0f µs  p99.9 %7.0f µs  achieved %5.0f rps  %d errors  send lag p50 %.0f µs, p99 %.0f µs",
					servers[k].name, s.p50, s.p99, s.p999, s.rps, s.errors, s.lag50, s.lag99)
			}
			b.Logf("  p99 ratio tailor/echo %.2fx; target p99 <= 2000 µs at 5000 rps", t.p99/f.p99)
		})
	}
}
