package benchmarks

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

// The serving data set: the committed PyTorch test models
// (serving/testdata/models) fed from one feature view of 10k customers,
// pushed through the FeatureService, in a database of its own. The three
// task models read the same ten float32 features and the hour and day
// derived from the request time; the channel model also reads the device,
// one-hot. NextBestAction reads, besides, the products a customer owns and
// two consents: 13 features in one fetch.
const (
	servingDB   = "bench_serving"
	servingView = "cust"
	servingKeys = 10_000
)

const servingDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: f0, type: float32}
      - {name: f1, type: float32}
      - {name: f2, type: float32}
      - {name: f3, type: float32}
      - {name: f4, type: float32}
      - {name: f5, type: float32}
      - {name: f6, type: float32}
      - {name: f7, type: float32}
      - {name: f8, type: float32}
      - {name: f9, type: float32}
      - {name: owned, type: array<string>}
      - {name: consent_email, type: bool}
      - {name: consent_sms, type: bool}
`

// modelFeatures are the twelve elements of the "features" input every task
// model reads.
const modelFeatures = `  - name: features
    elements:
      - {feature: "cust:f0"}
      - {feature: "cust:f1"}
      - {feature: "cust:f2"}
      - {feature: "cust:f3"}
      - {feature: "cust:f4"}
      - {feature: "cust:f5"}
      - {feature: "cust:f6"}
      - {feature: "cust:f7"}
      - {feature: "cust:f8"}
      - {feature: "cust:f9"}
      - {context: hour_of_day}
      - {context: day_of_week}
`

var servingSpecs = map[string]string{
	"next_product": "name: next_product\ntask: next_product\ninputs:\n" + modelFeatures +
		"outputs:\n  - name: probabilities\n    labels: [p1, p2, p3, p4, p5, p6, p7, p8]\n",
	"timing": "name: timing\ntask: timing\ninputs:\n" + modelFeatures +
		"outputs:\n  - name: probabilities\n    labels: [1h, 6h, 1d, 3d, 7d, 30d]\n",
	"channel": "name: channel\ntask: channel\ninputs:\n" + modelFeatures +
		"  - name: context\n    elements:\n      - {context: device, encoding: one_hot, vocabulary: [web, ios, android, other]}\n" +
		"outputs:\n  - name: probabilities\n    labels: [email, sms, push, app]\n",
}

const servingNBA = `models: {next_product: next_product@champion, timing: timing@champion, channel: channel@champion}
owned: "cust:owned"
consent: {email: "cust:consent_email", sms: "cust:consent_sms"}
fallback: {products: [p8, p7, p6, p5, p4, p3], channel: email, send_after: 2d}
`

var (
	predictRefs = featureRefs("f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9")
	nbaRefs     = append(featureRefs("owned", "consent_email", "consent_sms"), predictRefs...)
	devices     = []string{"web", "ios", "android", "other"}
	channels    = []string{"email", "sms", "push"}
	servingRepo string // the definitions, specs and nba.yaml, once loadServing ran

	servingOnce, modelsOnce sync.Once
	servingErr, modelsErr   error
)

func featureRefs(names ...string) []string {
	refs := make([]string, len(names))
	for i, n := range names {
		refs[i] = servingView + ":" + n
	}
	return refs
}

// tailorServing runs the tailor binary against the serving benchmarks'
// database.
func (e *env) tailorServing(args ...string) error {
	args = append([]string{"--clickhouse", e.srv.DSN(), "--database", servingDB}, args...)
	out, err := exec.Command(e.tailor, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tailor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// loadServing writes the definitions, the model specs and nba.yaml, and
// applies the definitions, once per test binary: `tailor serve --nba`
// checks nba.yaml against them when it starts.
func (e *env) loadServing(b *testing.B) {
	b.Helper()
	servingOnce.Do(func() {
		servingRepo = filepath.Join(e.dir, "serving-repo")
		files := map[string]string{"defs/defs.yaml": servingDefs, "nba.yaml": servingNBA}
		for name, spec := range servingSpecs {
			files[name+".yaml"] = spec
		}
		for name, text := range files {
			p := filepath.Join(servingRepo, name)
			if servingErr = os.MkdirAll(filepath.Dir(p), 0o755); servingErr != nil {
				return
			}
			if servingErr = os.WriteFile(p, []byte(text), 0o644); servingErr != nil {
				return
			}
		}
		servingErr = e.tailorServing("apply", filepath.Join(servingRepo, "defs"))
	})
	if servingErr != nil {
		b.Fatal(servingErr)
	}
}

// servingServer is `tailor serve` with every customer in its tier.
type servingServer struct {
	*serverProc
	// readThrough is how many read-through queries it had made when every
	// customer was in its tier.
	readThrough float64
}

// servingIntraOp is the ONNX Runtime intra-op thread count of the served
// models and of the in-process floor: one, the setting for a server
// running many requests at once.
const servingIntraOp = 1

// startServingServe runs `tailor serve` with the next-best-action
// configuration and Go's profiling endpoints, every model run on its own
// (no dynamic batching) with servingIntraOp threads. Background polls (following
// other writers, reloading definitions, re-resolving aliases) are pushed
// out to an hour: they are not the request path measured here. The first
// server of a test binary pushes the customers and registers and aliases
// the models (ensureServingData); later ones find the customers in
// ClickHouse when they warm start. Either way every customer is in the
// tier when it returns.
func (e *env) startServingServe(b *testing.B) *servingServer {
	b.Helper()
	e.loadServing(b)
	cmd := exec.Command(e.tailor, "--clickhouse", e.srv.DSN(), "--database", servingDB, "serve",
		"--addr", "127.0.0.1:0", "--warm-start", "--online-memory", "256MiB",
		"--follow", "1h", "--reload", "1h", "--model-refresh", "1h",
		"--max-batch", "1", "--intra-op-threads", strconv.Itoa(servingIntraOp),
		"--nba", filepath.Join(servingRepo, "nba.yaml"), "--pprof")
	p := &servingServer{serverProc: startServer(b, "tailor serve", cmd)}
	e.ensureServingData(b, p.serverProc)
	p.fillTier(b)
	return p
}

// fillTier reads every customer once if the tier does not hold them all
// (a push refreshes entries the tier holds, it does not add any): each
// read goes through to ClickHouse and leaves the customer in the tier.
func (p *servingServer) fillTier(b *testing.B) {
	b.Helper()
	if scrape(b, p.base, "tailor_online_tier_entries") < servingKeys {
		fs := clientPool(p.base, 1, identity)[0]
		const perRead = 1_000
		for start := 0; start < servingKeys; start += perRead {
			req := &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: nbaRefs}}}
			for i := start; i < min(start+perRead, servingKeys); i++ {
				req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{
					"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: onlineKey(i)}},
				}})
			}
			resp, err := fs.GetOnlineFeatures(context.Background(), connect.NewRequest(req))
			if err != nil {
				b.Fatal(err)
			}
			if !presentAll(resp.Msg, len(req.GetEntities()), len(nbaRefs)) {
				b.Fatalf("customers %d to %d: not every feature is present", start, start+len(req.GetEntities())-1)
			}
		}
	}
	if n := scrape(b, p.base, "tailor_online_tier_entries"); n != servingKeys {
		b.Fatalf("the tier holds %v entries, want every customer (%d)", n, servingKeys)
	}
	p.readThrough = scrape(b, p.base, "tailor_online_read_through_queries_total")
}

// checkNoReadThrough fails b if the server went to ClickHouse for any
// customer since fillTier: the figures are of the in-memory path only.
func (p *servingServer) checkNoReadThrough(b *testing.B) {
	b.Helper()
	if n := scrape(b, p.base, "tailor_online_read_through_queries_total") - p.readThrough; n != 0 {
		b.Fatalf("%v read-through queries: the tier does not hold every customer", n)
	}
}

// ensureServingData pushes one row per customer through p and registers
// the three models with the champion alias on version 1, once per test
// binary.
func (e *env) ensureServingData(b *testing.B, p *serverProc) {
	b.Helper()
	modelsOnce.Do(func() {
		rng := rand.New(rand.NewPCG(5, 5))
		fs := featurestorev1connect.NewFeatureServiceClient(h2cClient(), p.base)
		at := timestamppb.New(time.Now().Add(-time.Minute))
		const perPush = 2_000
		for start := 0; start < servingKeys && modelsErr == nil; start += perPush {
			push := &featurestorev1.PushRequest{FeatureView: servingView}
			for i := start; i < min(start+perPush, servingKeys); i++ {
				vals := map[string]*featurestorev1.Value{
					"customer_id":   {Kind: &featurestorev1.Value_StringValue{StringValue: onlineKey(i)}},
					"owned":         {Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{fmt.Sprintf("p%d", 1+rng.IntN(8))}}}},
					"consent_email": {Kind: &featurestorev1.Value_BoolValue{BoolValue: true}},
					"consent_sms":   {Kind: &featurestorev1.Value_BoolValue{BoolValue: rng.IntN(2) == 0}},
				}
				for f := range 10 {
					vals[fmt.Sprintf("f%d", f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: float32(rng.NormFloat64())}}
				}
				push.Rows = append(push.Rows, &featurestorev1.PushRow{Values: vals, EventTimestamp: at})
			}
			_, modelsErr = fs.Push(context.Background(), connect.NewRequest(push))
		}
		for _, m := range []string{"next_product", "timing", "channel"} {
			if modelsErr != nil {
				return
			}
			if modelsErr = e.tailorServing("models", "--server", p.base, "register", testModel(m),
				"--spec", filepath.Join(servingRepo, m+".yaml")); modelsErr != nil {
				return
			}
			modelsErr = e.tailorServing("models", "--server", p.base, "alias", m, "champion", "1")
		}
	})
	if modelsErr != nil {
		b.Fatal(modelsErr)
	}
}

// testModel is the path of a committed test model.
func testModel(name string) string {
	return filepath.Join("..", "serving", "testdata", "models", name+".onnx")
}

// customerRows draws rows random customers.
func customerRows(rng *rand.Rand, rows int) []*featurestorev1.EntityRow {
	out := make([]*featurestorev1.EntityRow, rows)
	for i := range out {
		out[i] = &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{
			"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: onlineKey(rng.IntN(servingKeys))}},
		}}
	}
	return out
}

// servingRequests builds count Predict requests of next_product@champion
// for rows random customers each, and the GetOnlineFeatures requests of
// the same customers for the ten features the model reads.
func servingRequests(rng *rand.Rand, count, rows int) ([]*servingv1.PredictRequest, []*featurestorev1.GetOnlineFeaturesRequest) {
	preds := make([]*servingv1.PredictRequest, count)
	gets := make([]*featurestorev1.GetOnlineFeaturesRequest, count)
	for i := range preds {
		keys := customerRows(rng, rows)
		preds[i] = &servingv1.PredictRequest{Model: "next_product@champion"}
		for _, k := range keys {
			preds[i].Instances = append(preds[i].Instances, &servingv1.Instance{Entities: k.GetKeys()})
		}
		gets[i] = &featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: predictRefs}},
			Entities: keys,
		}
	}
	return preds, gets
}

// nbaRequests builds count NextBestAction requests for random customers
// (top 3, one product excluded, three channels allowed, a device), and the
// GetOnlineFeatures requests of the same customers for the 13 features
// NextBestAction fetches.
func nbaRequests(rng *rand.Rand, count int) ([]*servingv1.NextBestActionRequest, []*featurestorev1.GetOnlineFeaturesRequest) {
	nbas := make([]*servingv1.NextBestActionRequest, count)
	gets := make([]*featurestorev1.GetOnlineFeaturesRequest, count)
	for i := range nbas {
		keys := customerRows(rng, 1)
		nbas[i] = &servingv1.NextBestActionRequest{
			Entities:        keys[0].GetKeys(),
			Context:         map[string]*featurestorev1.Value{"device": {Kind: &featurestorev1.Value_StringValue{StringValue: devices[rng.IntN(len(devices))]}}},
			K:               3,
			Exclude:         []string{fmt.Sprintf("p%d", 1+rng.IntN(8))},
			AllowedChannels: channels,
		}
		gets[i] = &featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: nbaRefs}},
			Entities: keys,
		}
	}
	return nbas, gets
}

// predictionPool returns n PredictionService clients (Connect protocol,
// binary protobuf, no gzip), each on its own h2c connection.
func predictionPool(base string, n int) []servingv1connect.PredictionServiceClient {
	cs := make([]servingv1connect.PredictionServiceClient, n)
	for i := range cs {
		cs[i] = servingv1connect.NewPredictionServiceClient(h2cClient(), base, identity)
	}
	return cs
}

// presentAll says whether resp answers rows entity rows with every feature
// PRESENT.
func presentAll(resp *featurestorev1.GetOnlineFeaturesResponse, rows, features int) bool {
	if len(resp.GetRows()) != rows || len(resp.GetFeatureNames()) != features {
		return false
	}
	for _, row := range resp.GetRows() {
		for _, v := range row.GetValues() {
			if v.GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT {
				return false
			}
		}
	}
	return true
}

// closedLoopFunc makes n calls from conns goroutines, one in flight each:
// call(g, i) makes call i on goroutine g's connection and says whether it
// was answered correctly. It returns the wall time and the failures. (It
// is closedLoop with the call left to the caller, so that any RPC can be
// measured by the same loop.)
func closedLoopFunc(conns, n int, call func(g, i int) bool) (time.Duration, int64) {
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conns {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if !call(g, int(i)) {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), bad.Load()
}

// openLoopFunc is openLoop with the call left to the caller: rate calls
// per second for d on a fixed schedule, each in a goroutine of its own,
// latency counted from when it was due (no coordinated omission).
// call(ctx, i) makes call i and says whether it was answered correctly.
func openLoopFunc(rate int, d time.Duration, call func(ctx context.Context, i int) bool) openResult {
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	r := openResult{latency: make([]time.Duration, n), lag: make([]time.Duration, n)}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		sleepUntil(due)
		wg.Go(func() {
			r.lag[i] = time.Since(due)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ok := call(ctx, i)
			cancel()
			r.latency[i] = time.Since(due)
			if !ok {
				r.latency[i] = failed
			}
		})
	}
	wg.Wait()
	for i, l := range r.latency {
		if l != failed {
			r.ok++
			r.elapsed = max(r.elapsed, time.Duration(i)*interval+l)
		}
	}
	return r
}

// selfCPU is the CPU time (user + system, all threads, ONNX Runtime's
// included) this process has used, to the microsecond: getrusage, not the
// 10 ms ticks of /proc/PID/stat.
func selfCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverProfileEnv, when set to a directory, makes the serving
// benchmarks profile the server after they measure: a CPU profile of a few
// seconds of the load they measured (Predict alone, NextBestAction alone),
// written there as NAME.pprof, for `go tool pprof -top FILE`. The profile
// runs outside the measured figures.
const serverProfileEnv = "TAILOR_BENCH_SERVER_PROFILE"

// profileServer, when serverProfileEnv is set, collects a CPU profile of p
// (Go's /debug/pprof/profile; the server runs with --pprof) while load
// runs, calling load until the profile's d has passed.
func profileServer(b *testing.B, p *serverProc, name string, d time.Duration, load func()) {
	b.Helper()
	dir := os.Getenv(serverProfileEnv)
	if dir == "" {
		return
	}
	path := filepath.Join(dir, name+".pprof")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.base, int(d.Seconds())))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("%s", resp.Status)
			return
		}
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	for time.Since(start) < d {
		load()
	}
	if err := <-done; err != nil {
		b.Fatalf("profile of %s: %v", p.name, err)
	}
	b.Logf("CPU profile of %s under this load: %s", p.name, path)
}
