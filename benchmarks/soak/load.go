package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

// op is one kind of request of the mix.
type op int

const (
	opGet op = iota
	opPush
	opPredict
	opNBA
	numOps
)

var (
	opNames = [numOps]string{"GetOnlineFeatures", "Push", "Predict", "NextBestAction"}
	opFlags = [numOps]string{"get", "push", "predict", "nba"}
	// opProcedures are the Connect procedures, as the server's metrics
	// name them.
	opProcedures = [numOps]string{
		featurestorev1connect.FeatureServiceGetOnlineFeaturesProcedure, featurestorev1connect.FeatureServicePushProcedure,
		servingv1connect.PredictionServicePredictProcedure, servingv1connect.PredictionServiceNextBestActionProcedure,
	}
	devices   = []string{"web", "ios", "android", "other"}
	channels  = []string{"email", "sms", "push"}
	products  = []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"}
	smallRefs = []string{"profile:f0", "profile:f3", "profile:consent_email", "activity:orders_7d", "activity:device"}
)

// The shape of the answers, from testdata/repo/soak.yaml and the specs.
const (
	profileFeatures  = 13
	activityFeatures = 4
	productLabels    = 8
	nbaK             = 3
)

// mix is the share of each op, as weights.
type mix [numOps]int

// parseMix reads "get=50,push=20,predict=20,nba=10"; an op left out has
// weight 0.
func parseMix(s string) (mix, error) {
	var m mix
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		i := slices.Index(opFlags[:], name)
		n, err := strconv.Atoi(val)
		if !ok || i < 0 || err != nil || n < 0 {
			return m, fmt.Errorf("%q: want name=weight with names %s", part, strings.Join(opFlags[:], ", "))
		}
		m[i] = n
		total += n
	}
	if total == 0 {
		return m, errors.New("every weight is 0")
	}
	return m, nil
}

func (m mix) String() string {
	total := 0
	for _, w := range m {
		total += w
	}
	var parts []string
	for i, w := range m {
		if w > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", opFlags[i], 100*float64(w)/float64(total)))
		}
	}
	return strings.Join(parts, ", ")
}

// pick draws an op by weight.
func (m mix) pick(rng *rand.Rand) op {
	total := 0
	for _, w := range m {
		total += w
	}
	n := rng.IntN(total)
	for i, w := range m {
		if n < w {
			return op(i)
		}
		n -= w
	}
	return opGet
}

func customerKey(i int) string { return "c" + strconv.Itoa(i) }

func stringValue(s string) *featurestorev1.Value {
	return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
}

// requests draws the requests of one client.
type requests struct {
	rng     *rand.Rand
	keys    int        // known customers c0 .. c{keys-1}
	zipf    *rand.Zipf // draws customers by popularity; nil: uniformly
	rows    int        // most entity rows of a GetOnlineFeatures
	unknown float64    // share of GetOnlineFeatures rows for unknown customers
}

func newRequests(cfg config, rng *rand.Rand) *requests {
	g := &requests{rng: rng, keys: cfg.keys, rows: cfg.rows, unknown: cfg.unknown}
	if cfg.zipf > 1 {
		g.zipf = rand.NewZipf(rng, cfg.zipf, 1, uint64(cfg.keys-1))
	}
	return g
}

// key draws a known customer (c0 the most popular under -zipf), or an
// unknown one: u-prefixed, never stored, hardly ever asked twice.
func (g *requests) key(unknown bool) string {
	switch {
	case unknown:
		return "u" + strconv.Itoa(g.rng.IntN(1<<30))
	case g.zipf != nil:
		return customerKey(int(g.zipf.Uint64()))
	}
	return customerKey(g.rng.IntN(g.keys))
}

// get asks for 1 to g.rows customers, a share of them unknown, by the
// feature service (both views, every feature) or by a few references.
func (g *requests) get() (*featurestorev1.GetOnlineFeaturesRequest, []bool) {
	req := &featurestorev1.GetOnlineFeaturesRequest{}
	if g.rng.IntN(2) == 0 {
		req.Features = &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "soak_inputs"}
	} else {
		req.Features = &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: smallRefs}}
	}
	n := 1 + g.rng.IntN(g.rows)
	known := make([]bool, n)
	for i := range n {
		known[i] = g.rng.Float64() >= g.unknown
		req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{
			"customer_id": stringValue(g.key(!known[i])),
		}})
	}
	return req, known
}

// push stores 1 to 4 new rows, timed now, of known customers in one of
// the two views: the keys being read are being written.
func (g *requests) push() *featurestorev1.PushRequest {
	now := timestamppb.Now()
	req := &featurestorev1.PushRequest{FeatureView: "profile"}
	if g.rng.IntN(2) == 0 {
		req.FeatureView = "activity"
	}
	for range 1 + g.rng.IntN(4) {
		vals := map[string]*featurestorev1.Value{"customer_id": stringValue(g.key(false))}
		if req.FeatureView == "profile" {
			g.profileValues(vals)
		} else {
			g.activityValues(vals)
		}
		req.Rows = append(req.Rows, &featurestorev1.PushRow{Values: vals, EventTimestamp: now})
	}
	return req
}

func (g *requests) profileValues(vals map[string]*featurestorev1.Value) {
	for f := range 10 {
		vals["f"+strconv.Itoa(f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: float32(g.rng.NormFloat64())}}
	}
	vals["owned"] = &featurestorev1.Value{Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{products[g.rng.IntN(len(products))]}}}}
	vals["consent_email"] = &featurestorev1.Value{Kind: &featurestorev1.Value_BoolValue{BoolValue: g.rng.IntN(5) > 0}}
	vals["consent_sms"] = &featurestorev1.Value{Kind: &featurestorev1.Value_BoolValue{BoolValue: g.rng.IntN(2) == 0}}
}

func (g *requests) activityValues(vals map[string]*featurestorev1.Value) {
	vals["orders_7d"] = &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: int64(g.rng.IntN(12))}}
	vals["spend_30d"] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: float64(g.rng.IntN(100_000)) / 100}}
	vals["device"] = stringValue(devices[g.rng.IntN(len(devices))])
	vals["open_hour"] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: float64(g.rng.IntN(24))}}
}

// predict runs next_product@champion on 1 to 4 known customers.
func (g *requests) predict() *servingv1.PredictRequest {
	req := &servingv1.PredictRequest{Model: "next_product@champion"}
	for range 1 + g.rng.IntN(4) {
		req.Instances = append(req.Instances, &servingv1.Instance{
			Entities: map[string]*featurestorev1.Value{"customer_id": stringValue(g.key(false))},
		})
	}
	return req
}

// nba asks the next best action of one known customer on a device.
func (g *requests) nba() *servingv1.NextBestActionRequest {
	return &servingv1.NextBestActionRequest{
		Entities:        map[string]*featurestorev1.Value{"customer_id": stringValue(g.key(false))},
		Context:         map[string]*featurestorev1.Value{"device": stringValue(devices[g.rng.IntN(len(devices))])},
		K:               nbaK,
		Exclude:         []string{products[g.rng.IntN(len(products))]},
		AllowedChannels: channels,
	}
}

// client is one connection's Connect clients (Connect protocol, binary
// protobuf).
type client struct {
	features featurestorev1connect.FeatureServiceClient
	predict  servingv1connect.PredictionServiceClient
}

func newClient(base string) *client {
	hc := h2c()
	return &client{
		features: featurestorev1connect.NewFeatureServiceClient(hc, base),
		predict:  servingv1connect.NewPredictionServiceClient(hc, base),
	}
}

// wrongAnswer is an answer that came back but is not right.
type wrongAnswer struct{ msg string }

func (e *wrongAnswer) Error() string { return e.msg }

func wrong(format string, args ...any) error {
	return &wrongAnswer{msg: fmt.Sprintf(format, args...)}
}

// send makes one drawn request on a client and checks its answer: nil
// when it was answered rightly, a Connect error when it failed, a
// *wrongAnswer when the answer is wrong.
type send func(ctx context.Context, c *client) error

// prepare draws a request of kind o.
func (g *requests) prepare(o op) send {
	switch o {
	case opGet:
		req, known := g.get()
		return func(ctx context.Context, c *client) error {
			resp, err := c.features.GetOnlineFeatures(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			return checkGet(req, known, resp.Msg)
		}
	case opPush:
		req := g.push()
		return func(ctx context.Context, c *client) error {
			resp, err := c.features.Push(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			if resp.Msg.GetRowsStored() != int64(len(req.GetRows())) {
				return wrong("%d rows stored of %d pushed", resp.Msg.GetRowsStored(), len(req.GetRows()))
			}
			return nil
		}
	case opPredict:
		req := g.predict()
		return func(ctx context.Context, c *client) error {
			resp, err := c.predict.Predict(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			return checkPredict(req, resp.Msg)
		}
	default:
		req := g.nba()
		return func(ctx context.Context, c *client) error {
			resp, err := c.predict.NextBestAction(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			return checkNBA(resp.Msg)
		}
	}
}

// checkGet wants one row per entity row with every feature: a known
// customer's profile PRESENT with a value (its rows are within the ttl and
// pushes only add newer ones), its activity PRESENT or OUTSIDE_MAX_AGE,
// and an unknown customer NOT_FOUND everywhere.
func checkGet(req *featurestorev1.GetOnlineFeaturesRequest, known []bool, resp *featurestorev1.GetOnlineFeaturesResponse) error {
	views := requestedViews(req)
	if len(resp.GetRows()) != len(known) || len(resp.GetFeatureNames()) != len(views) {
		return wrong("%d rows of %d features for %d entity rows of %d features", len(resp.GetRows()), len(resp.GetFeatureNames()), len(known), len(views))
	}
	for i, row := range resp.GetRows() {
		if len(row.GetValues()) != len(views) {
			return wrong("row %d has %d values of %d", i, len(row.GetValues()), len(views))
		}
		for j, v := range row.GetValues() {
			st, present := v.GetStatus(), v.GetStatus() == featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT && v.GetValue() != nil
			var ok bool
			switch {
			case !known[i]:
				ok = st == featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND
			case views[j] == "profile":
				ok = present
			default:
				ok = present || st == featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE
			}
			if !ok {
				who := "known"
				if !known[i] {
					who = "unknown"
				}
				return wrong("%s customer, feature %s: status %s", who, resp.GetFeatureNames()[j], st)
			}
		}
	}
	return nil
}

// requestedViews is the view of each feature a request asks for, in
// answer order: the feature service is every profile feature, then every
// activity feature.
func requestedViews(req *featurestorev1.GetOnlineFeaturesRequest) []string {
	var views []string
	if refs := req.GetFeatureRefs(); refs != nil {
		for _, r := range refs.GetRefs() {
			view, _, _ := strings.Cut(r, ":")
			views = append(views, view)
		}
		return views
	}
	for range profileFeatures {
		views = append(views, "profile")
	}
	for range activityFeatures {
		views = append(views, "activity")
	}
	return views
}

// checkPredict wants one prediction per instance: the eight product
// probabilities, summing to 1.
func checkPredict(req *servingv1.PredictRequest, resp *servingv1.PredictResponse) error {
	if len(resp.GetPredictions()) != len(req.GetInstances()) {
		return wrong("%d predictions for %d instances", len(resp.GetPredictions()), len(req.GetInstances()))
	}
	for i, p := range resp.GetPredictions() {
		if len(p.GetOutputs()) != 1 || len(p.GetOutputs()[0].GetValues()) != productLabels {
			return wrong("prediction %d: %d outputs, want probabilities of %d products", i, len(p.GetOutputs()), productLabels)
		}
		sum := 0.0
		for _, v := range p.GetOutputs()[0].GetValues() {
			sum += v
		}
		if math.Abs(sum-1) > 1e-3 {
			return wrong("prediction %d: probabilities sum to %g", i, sum)
		}
	}
	return nil
}

// checkNBA wants the models' answer: a known customer answered by a
// fallback means a part failed (features unavailable, a model error),
// which NextBestAction hides behind a valid answer.
func checkNBA(resp *servingv1.NextBestActionResponse) error {
	if resp.GetFallback() {
		return wrong("answered by the fallback: %s", strings.Join(resp.GetFallbackReasons(), "; "))
	}
	if len(resp.GetProducts()) != nbaK || len(resp.GetModels()) != len(taskModels) {
		return wrong("%d products from %d models, want %d from %d", len(resp.GetProducts()), len(resp.GetModels()), nbaK, len(taskModels))
	}
	return nil
}

// loadRun drives the clients, open loop: each client sends on a fixed
// schedule of its own, rate/clients requests per second, staggered against
// the others, each request in a goroutine of its own on the client's
// connection, whether or not earlier ones were answered; a request's
// latency counts from when it was due. At most maxInFlight requests of a
// client are outstanding: past that it waits (and the wait counts in the
// latency), so a stalled server cannot make the soak pile up goroutines.
type loadRun struct {
	cfg   config
	rec   *recorder
	start time.Time
	end   time.Time
}

// maxInFlight bounds each client's outstanding requests.
const maxInFlight = 256

func (l *loadRun) client(ctx context.Context, id int, c *client) {
	rng := rand.New(rand.NewPCG(l.cfg.seed, uint64(id)+1))
	g := newRequests(l.cfg, rng)
	every := time.Duration(float64(time.Second) * float64(l.cfg.clients) / l.cfg.rate)
	due := l.start.Add(every * time.Duration(id) / time.Duration(l.cfg.clients))
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ; due.Before(l.end); due = due.Add(every) {
		if !l.wait(ctx, due, slots) {
			return
		}
		o := l.cfg.mix.pick(rng)
		call, due := g.prepare(o), due
		timeout, abandon := l.cfg.timeout, rng.Float64() < l.cfg.abandon
		if abandon {
			timeout = time.Millisecond + time.Duration(rng.Int64N(int64(abandonWithin)))
		}
		wg.Go(func() {
			defer func() { <-slots }()
			// Requests run to their own deadline even when the soak is
			// interrupted, so an interruption cancels nothing in flight.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
			defer cancel()
			err := call(rctx, c)
			if abandon {
				l.rec.abandoned(o, err)
				return
			}
			l.rec.done(o, time.Since(due), err)
		})
	}
}

// abandonWithin bounds the deadline of an abandoned request (-abandon):
// from 1 ms to 1 ms + abandonWithin.
const abandonWithin = 20 * time.Millisecond

// wait waits until due and for a free in-flight slot; false when ctx
// ended first.
func (l *loadRun) wait(ctx context.Context, due time.Time, slots chan struct{}) bool {
	if d := time.Until(due); d > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	}
	select {
	case slots <- struct{}{}:
	default:
		l.rec.capped()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}
