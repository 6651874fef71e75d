package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

const nbaDefs = `entities:
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

// requestSpec is a model fed only by request values prefix0.. (the
// inputs named by the map, each of the given width).
func requestSpec(name, task string, inputs map[string]int, prefix string, output string, labels []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ntask: %s\ninputs:\n", name, task)
	names := make([]string, 0, len(inputs))
	for n := range inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    elements:\n", n)
		for i := range inputs[n] {
			fmt.Fprintf(&b, "      - {request: %s_%s%d}\n", prefix, n, i)
		}
	}
	fmt.Fprintf(&b, "outputs:\n  - name: %s\n    labels: [%s]\n", output, strings.Join(labels, ", "))
	return b.String()
}

// TestNextBestAction answers a customer with three PyTorch-exported
// models and checks every part against PyTorch's own outputs: products
// ranked without owned and excluded ones, the timing distribution and its
// send time, the channel distribution restricted to consented and allowed
// channels; then a missing model and an unknown customer fall back,
// flagged.
func TestNextBestAction(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": nbaDefs}))
	products := []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"}
	buckets := []string{"1h", "6h", "1d", "3d", "7d", "30d"}
	channels := []string{"email", "sms", "push", "app"}
	dir := writeFiles(t, map[string]string{
		"next_product.yaml": predictSpec,
		"timing.yaml":       requestSpec("timing", "timing", map[string]int{"features": 12}, "t", "probabilities", buckets),
		"channel.yaml":      requestSpec("channel", "channel", map[string]int{"features": 12, "context": 4}, "c", "probabilities", channels),
		"nba.yaml": `models: {next_product: next_product@champion, timing: timing@champion, channel: channel@champion}
owned: "cust:owned"
consent: {email: "cust:consent_email", sms: "cust:consent_sms"}
fallback: {products: [p8, p7, p6, p5, p4, p3], channel: email, send_after: 2d}
`,
	})
	base, _ := startServe(t, c, "--warm-start=false", "--nba", filepath.Join(dir, "nba.yaml"))
	for _, m := range []string{"next_product", "timing", "channel"} {
		c.ok("models", "--server", base, "register", testModel(t, m+".onnx"), "--spec", filepath.Join(dir, m+".yaml"))
	}
	for _, m := range []string{"next_product", "timing"} {
		c.ok("models", "--server", base, "alias", m, "champion", "1")
	}

	np, tm, ch := readExpected(t, "next_product"), readExpected(t, "timing"), readExpected(t, "channel")
	const row = 2
	ctx := context.Background()
	vals := map[string]*featurestorev1.Value{
		"customer_id":   {Kind: &featurestorev1.Value_StringValue{StringValue: "c1"}},
		"owned":         {Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{"p2"}}}},
		"consent_email": {Kind: &featurestorev1.Value_BoolValue{BoolValue: true}},
		"consent_sms":   {Kind: &featurestorev1.Value_BoolValue{BoolValue: false}},
	}
	for f := range 10 {
		vals[fmt.Sprintf("f%d", f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: float32(np.Inputs[0].Data[row*12+f])}}
	}
	if _, err := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base).Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{
		FeatureView: "cust", Rows: []*featurestorev1.PushRow{{Values: vals, EventTimestamp: timestamppb.New(time.Now().Add(-time.Minute))}},
	})); err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{"r10": np.Inputs[0].Data[row*12+10], "r11": np.Inputs[0].Data[row*12+11]}
	for i := range 12 {
		values[fmt.Sprintf("t_features%d", i)] = tm.Inputs[0].Data[row*12+i]
		values[fmt.Sprintf("c_features%d", i)] = ch.Inputs[0].Data[row*12+i]
	}
	for i := range 4 {
		values[fmt.Sprintf("c_context%d", i)] = ch.Inputs[1].Data[row*4+i]
	}
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	req := &servingv1.NextBestActionRequest{
		Entities: map[string]*featurestorev1.Value{"customer_id": vals["customer_id"]},
		Context:  map[string]*featurestorev1.Value{"device": {Kind: &featurestorev1.Value_StringValue{StringValue: "ios"}}},
		Values:   values, K: 3, Exclude: []string{"p5"}, AllowedChannels: []string{"email", "sms", "push"},
		RequestTime: timestamppb.New(at),
	}
	client := servingv1connect.NewPredictionServiceClient(h2cClient(), base)

	// The channel model has no champion yet: the channel part falls back
	// to the default channel, flagged; the rest is answered by the models.
	resp, err := client.NextBestAction(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	a := resp.Msg
	if !a.GetFallback() || len(a.GetFallbackReasons()) != 1 || !strings.Contains(a.GetFallbackReasons()[0], "channel: model channel@champion") {
		t.Fatalf("fallback %v reasons %v, want the channel part flagged", a.GetFallback(), a.GetFallbackReasons())
	}
	if a.GetChannel() != "email" || len(a.GetChannels()) != 1 {
		t.Fatalf("fallback channel %q %v, want email", a.GetChannel(), a.GetChannels())
	}

	c.ok("models", "--server", base, "alias", "channel", "champion", "1")
	resp, err = client.NextBestAction(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	a = resp.Msg
	if a.GetFallback() {
		t.Fatalf("fell back: %v", a.GetFallbackReasons())
	}
	// Products: PyTorch's probabilities ranked, p2 (owned) and p5
	// (excluded) left out, top 3.
	type scored struct {
		label string
		p     float64
	}
	var want []scored
	for i, l := range products {
		if l != "p2" && l != "p5" {
			want = append(want, scored{l, np.Outputs[0].Data[row*8+i]})
		}
	}
	sort.SliceStable(want, func(i, j int) bool { return want[i].p > want[j].p })
	want = want[:3]
	if len(a.GetProducts()) != 3 {
		t.Fatalf("products %v", a.GetProducts())
	}
	for i, p := range a.GetProducts() {
		if p.GetLabel() != want[i].label || math.Abs(p.GetScore()-want[i].p) > 1e-5 {
			t.Errorf("product %d: %s %.6f, PyTorch ranks %s %.6f", i, p.GetLabel(), p.GetScore(), want[i].label, want[i].p)
		}
	}
	// Timing: the distribution and the send time of the likeliest bucket.
	best := 0
	for i, b := range a.GetTiming() {
		wantP := tm.Outputs[0].Data[row*6+i]
		if b.GetLabel() != buckets[i] || math.Abs(b.GetProbability()-wantP) > 1e-5 {
			t.Errorf("timing bucket %d: %s %.6f, PyTorch %s %.6f", i, b.GetLabel(), b.GetProbability(), buckets[i], wantP)
		}
		if wantP > tm.Outputs[0].Data[row*6+best] {
			best = i
		}
	}
	afters := []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour, 72 * time.Hour, 168 * time.Hour, 720 * time.Hour}
	if got := a.GetSendAt().AsTime(); !got.Equal(at.Add(afters[best])) {
		t.Errorf("send at %s, want %s (bucket %s)", got, at.Add(afters[best]), buckets[best])
	}
	// Channels: sms has no consent, app is not allowed; email and push
	// renormalised.
	pe, pp := ch.Outputs[0].Data[row*4+0], ch.Outputs[0].Data[row*4+2]
	wantCh := map[string]float64{"email": pe / (pe + pp), "push": pp / (pe + pp)}
	if len(a.GetChannels()) != 2 {
		t.Fatalf("channels %v, want email and push", a.GetChannels())
	}
	for _, c := range a.GetChannels() {
		if math.Abs(c.GetScore()-wantCh[c.GetLabel()]) > 1e-5 {
			t.Errorf("channel %s %.6f, want %.6f", c.GetLabel(), c.GetScore(), wantCh[c.GetLabel()])
		}
	}
	if top := map[bool]string{true: "email", false: "push"}[pe >= pp]; a.GetChannel() != top {
		t.Errorf("channel %s, want %s", a.GetChannel(), top)
	}
	var versions []string
	for _, m := range a.GetModels() {
		versions = append(versions, fmt.Sprintf("%s:%d@%s", m.GetName(), m.GetVersion(), m.GetAlias()))
	}
	if got := strings.Join(versions, " "); got != "next_product:1@champion timing:1@champion channel:1@champion" {
		t.Errorf("models %s", got)
	}

	// The CLI prints the same answer.
	mustContain(t, compact(c.ok("nba", "--server", base, "--entity", "customer_id=c1", "--k", "2", "--exclude", "p5", "--channels", "email,push")),
		`"label":"`+want[0].label+`"`, `"channel":"`, `"sendAt":"`, `"alias":"champion"`)

	// An unknown customer: every part falls back, flagged.
	req.Entities = map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "stranger"}}}
	resp, err = client.NextBestAction(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	a = resp.Msg
	var labels []string
	for _, p := range a.GetProducts() {
		labels = append(labels, p.GetLabel())
	}
	// The popularity ranking, p5 excluded (the stranger owns nothing).
	if !a.GetFallback() || len(a.GetFallbackReasons()) != 3 || strings.Join(labels, ",") != "p8,p7,p6" {
		t.Errorf("unknown customer: fallback %v %v, products %v", a.GetFallback(), a.GetFallbackReasons(), labels)
	}
	if !a.GetSendAt().AsTime().Equal(at.Add(48 * time.Hour)) {
		t.Errorf("unknown customer: send at %s, want the fallback 2d later", a.GetSendAt().AsTime())
	}
	// Nobody knows the stranger's consent: the fallback channel, flagged.
	if a.GetChannel() != "email" || !strings.Contains(strings.Join(a.GetFallbackReasons(), " "), "fallback channel email") {
		t.Errorf("unknown customer: channel %q, reasons %v; want the fallback channel email, flagged", a.GetChannel(), a.GetFallbackReasons())
	}
	// Every answer is in the prediction log, the fallback one flagged.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.sql(fmt.Sprintf(`SELECT entity, fallback, arrayStringConcat(model_names, ','), length(inputs_digest), position(outputs, 'sendAt') > 0
			FROM %s.prediction_log WHERE method = 'NextBestAction' ORDER BY at, at_us`, c.db))
		if strings.Count(got, "\n") >= 4 {
			lines := strings.Split(strings.TrimSpace(got), "\n")
			sort.Strings(lines)
			want := []string{
				"customer_id=c1\t0\tnext_product,timing,channel\t64\t1", // the RPC
				"customer_id=c1\t0\tnext_product,timing,channel\t64\t1", // the CLI
				"customer_id=c1\t1\tnext_product,timing\t64\t1",         // no channel champion yet
				"customer_id=stranger\t1\t\t64\t1",
			}
			if strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Errorf("prediction log:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prediction log after 5s:\n%s", got)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Batch scoring gives every customer the answer the online service
	// gives at the same instant: c1, a stranger, and random customers
	// (random features, owned products and consents, some unset).
	rng := rand.New(rand.NewPCG(6, 6))
	ids := []string{"c1", "stranger"}
	var random []*featurestorev1.PushRow
	for i := range 30 {
		id := fmt.Sprintf("r%d", i)
		ids = append(ids, id)
		rv := map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: id}}}
		for f := range 10 {
			if rng.IntN(8) > 0 {
				rv[fmt.Sprintf("f%d", f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: rng.Float32()*4 - 2}}
			}
		}
		var owned []string
		for _, p := range products {
			if rng.IntN(4) == 0 {
				owned = append(owned, p)
			}
		}
		rv["owned"] = &featurestorev1.Value{Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: owned}}}
		for _, ch := range []string{"consent_email", "consent_sms"} {
			if rng.IntN(3) > 0 {
				rv[ch] = &featurestorev1.Value{Kind: &featurestorev1.Value_BoolValue{BoolValue: rng.IntN(2) == 0}}
			}
		}
		random = append(random, &featurestorev1.PushRow{Values: rv, EventTimestamp: timestamppb.New(time.Now().Add(-time.Duration(1+rng.IntN(600)) * time.Minute))})
	}
	if _, err := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base).Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "cust", Rows: random})); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	ents := filepath.Join(dir, "customers.csv")
	writeFile(t, ents, "customer_id\n"+strings.Join(ids, "\n")+"\n")
	batchOut := filepath.Join(dir, "nba.csv")
	mustContain(t, c.ok("score", "--next-best-action", "--nba", filepath.Join(dir, "nba.yaml"), "--k", "3", "--entities", ents,
		"--at", now.Format(time.RFC3339), "--out", batchOut), fmt.Sprintf("next best action for %d entities", len(ids)))
	lines := strings.Split(strings.TrimSpace(readFile(t, batchOut)), "\n")
	if lines[0] != "customer_id,products,product_scores,send_at,channel,fallback,fallback_reasons,models" || len(lines) != len(ids)+1 {
		t.Fatalf("batch answer:\n%s", readFile(t, batchOut))
	}
	// The same answers as Parquet, compressed as asked.
	pqOut := filepath.Join(dir, "nba.parquet")
	c.ok("score", "--next-best-action", "--nba", filepath.Join(dir, "nba.yaml"), "--k", "3", "--entities", ents,
		"--at", now.Format(time.RFC3339), "--out", pqOut, "--compression", "snappy")
	if codecs := parquetCodecs(t, pqOut); len(codecs) != 1 || !codecs[compress.Codecs.Snappy] {
		t.Errorf("the Parquet answers' column chunks use %v, want snappy", codecs)
	}
	if _, got := toCSV(t, pqOut); got != readFile(t, batchOut) {
		t.Errorf("the Parquet answers read back as\n%s\nthe CSV ones are\n%s", got, readFile(t, batchOut))
	}
	for i, id := range ids {
		resp, err := client.NextBestAction(ctx, connect.NewRequest(&servingv1.NextBestActionRequest{
			Entities: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: id}}},
			K:        3, RequestTime: timestamppb.New(now),
		}))
		if err != nil {
			t.Fatal(err)
		}
		var ps, ss, ms []string
		for _, p := range resp.Msg.GetProducts() {
			ps, ss = append(ps, p.GetLabel()), append(ss, strconv.FormatFloat(p.GetScore(), 'g', -1, 64))
		}
		for _, m := range resp.Msg.GetModels() {
			ms = append(ms, fmt.Sprintf("%s:%d", m.GetName(), m.GetVersion()))
		}
		cells := strings.Split(lines[i+1], ",")
		want := []string{id, strings.Join(ps, " "), strings.Join(ss, " "), resp.Msg.GetSendAt().AsTime().Format(time.RFC3339), resp.Msg.GetChannel(),
			strconv.FormatBool(resp.Msg.GetFallback())}
		if strings.Join(cells[:6], ",") != strings.Join(want, ",") || cells[len(cells)-1] != strings.Join(ms, " ") {
			t.Errorf("%s: batch %v, online %v %v", id, cells, want, ms)
		}
	}

	// A malformed key is the caller's error, not a fallback.
	req.Entities = map[string]*featurestorev1.Value{"customer": vals["customer_id"]}
	if _, err := client.NextBestAction(ctx, connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "customer_id") {
		t.Errorf("a missing join key gave %v, want InvalidArgument naming customer_id", err)
	}
}

// TestPredictionServiceCodes: each client mistake of Predict and
// NextBestAction is refused with InvalidArgument (or FailedPrecondition
// for an archived version asked by number), naming what is wrong, and
// nothing the caller asked for is silently replaced: a misspelt request
// value or context field, a request time no feature can have, a negative
// k; a channel nobody can answer gets the fallback, flagged.
func TestPredictionServiceCodes(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": nbaDefs}))
	channels := []string{"email", "sms", "push", "app"}
	dir := writeFiles(t, map[string]string{
		"next_product.yaml":    predictSpec,
		"next_product_v2.yaml": predictSpec + "description: the second version\n",
		"timing.yaml":          requestSpec("timing", "timing", map[string]int{"features": 12}, "t", "probabilities", []string{"1h", "6h", "1d", "3d", "7d", "30d"}),
		"channel.yaml":         requestSpec("channel", "channel", map[string]int{"features": 12, "context": 4}, "c", "probabilities", channels),
		"nba.yaml": `models: {next_product: next_product@champion, timing: timing@champion, channel: channel@champion}
consent: {email: "cust:consent_email", sms: "cust:consent_sms"}
fallback: {products: [p8, p7, p6], channel: email, send_after: 2d}
`,
	})
	base, _ := startServe(t, c, "--warm-start=false", "--model-refresh", "100ms", "--nba", filepath.Join(dir, "nba.yaml"))
	for _, m := range []string{"next_product", "timing", "channel"} {
		c.ok("models", "--server", base, "register", testModel(t, m+".onnx"), "--spec", filepath.Join(dir, m+".yaml"))
		c.ok("models", "--server", base, "alias", m, "champion", "1")
	}
	c.ok("models", "--server", base, "register", testModel(t, "next_product.onnx"), "--spec", filepath.Join(dir, "next_product_v2.yaml"))
	ctx := context.Background()
	if _, err := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base).Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{
		FeatureView: "cust", Rows: []*featurestorev1.PushRow{{
			Values:         map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "c1"}}, "consent_email": {Kind: &featurestorev1.Value_BoolValue{BoolValue: true}}},
			EventTimestamp: timestamppb.New(time.Now().Add(-time.Minute)),
		}},
	})); err != nil {
		t.Fatal(err)
	}
	client := servingv1connect.NewPredictionServiceClient(h2cClient(), base)
	c1 := map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "c1"}}}
	text := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	predict := func(model string, inst *servingv1.Instance, at *timestamppb.Timestamp) error {
		inst.Entities = c1
		_, err := client.Predict(ctx, connect.NewRequest(&servingv1.PredictRequest{Model: model, Instances: []*servingv1.Instance{inst}, RequestTime: at}))
		return err
	}
	nba := func(req *servingv1.NextBestActionRequest) (*servingv1.NextBestActionResponse, error) {
		req.Entities = c1
		resp, err := client.NextBestAction(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	good := map[string]float64{"r10": 1, "r11": 2}
	y9999 := timestamppb.New(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	y1900 := timestamppb.New(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name  string
		err   error
		code  connect.Code
		names []string
	}{
		{"misspelt request value", predict("next_product:1", &servingv1.Instance{Values: map[string]float64{"r10": 1, "r_11": 2}}, nil), connect.CodeInvalidArgument, []string{`"r_11"`, "r10, r11"}},
		{"unknown context field", predict("next_product:1", &servingv1.Instance{Values: good, Context: map[string]*featurestorev1.Value{"devise": text("ios")}}, nil), connect.CodeInvalidArgument, []string{`"devise"`, "timezone"}},
		{"derived context field", predict("next_product:1", &servingv1.Instance{Values: good, Context: map[string]*featurestorev1.Value{"hour_of_day": text("3")}}, nil), connect.CodeInvalidArgument, []string{`"hour_of_day"`, "request_time"}},
		{"timezone that is not one", predict("next_product:1", &servingv1.Instance{Values: good, Context: map[string]*featurestorev1.Value{"timezone": text("Mars/Olympus")}}, nil), connect.CodeInvalidArgument, []string{"Mars/Olympus"}},
		{"predict in 9999", predict("next_product:1", &servingv1.Instance{Values: good}, y9999), connect.CodeInvalidArgument, []string{"request_time", "9999"}},
		{"predict in 1900", predict("next_product:1", &servingv1.Instance{Values: good}, y1900), connect.CodeInvalidArgument, []string{"request_time", "1900"}},
		{"unknown model", predict("nope", &servingv1.Instance{Values: good}, nil), connect.CodeNotFound, []string{"nope"}},
		{"bad version", predict("next_product:x", &servingv1.Instance{Values: good}, nil), connect.CodeInvalidArgument, []string{"next_product:x"}},
		{"nba in 9999", func() error { _, err := nba(&servingv1.NextBestActionRequest{RequestTime: y9999}); return err }(), connect.CodeInvalidArgument, []string{"request_time"}},
		{"nba k = -5", func() error { _, err := nba(&servingv1.NextBestActionRequest{K: -5}); return err }(), connect.CodeInvalidArgument, []string{"k = -5"}},
		{"nba misspelt value", func() error {
			_, err := nba(&servingv1.NextBestActionRequest{Values: map[string]float64{"r10": 1, "r_11": 2}})
			return err
		}(), connect.CodeInvalidArgument, []string{`"r_11"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if connect.CodeOf(tc.err) != tc.code {
				t.Fatalf("%v, want %s", tc.err, tc.code)
			}
			for _, n := range tc.names {
				if !strings.Contains(tc.err.Error(), n) {
					t.Fatalf("%v does not name %s", tc.err, n)
				}
			}
		})
	}
	if err := predict("next_product:1", &servingv1.Instance{Values: good}, nil); err != nil {
		t.Fatalf("a good Predict: %v", err)
	}

	// A channel only the caller knows: the fallback channel, flagged.
	a, err := nba(&servingv1.NextBestActionRequest{AllowedChannels: []string{"whatsapp"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetChannel() != "email" || !a.GetFallback() || !strings.Contains(strings.Join(a.GetFallbackReasons(), " "), "whatsapp") {
		t.Fatalf("allowed [whatsapp]: channel %q fallback %v %v; want email, flagged, saying why", a.GetChannel(), a.GetFallback(), a.GetFallbackReasons())
	}

	// A version asked for by number is served until archived, then
	// refused, and served again once restored.
	if err := predict("next_product:2", &servingv1.Instance{Values: good}, nil); err != nil {
		t.Fatal(err)
	}
	c.ok("models", "--server", base, "archive", "next_product", "2", "--reason", "test")
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := predict("next_product:2", &servingv1.Instance{Values: good}, nil)
		if connect.CodeOf(err) == connect.CodeFailedPrecondition && strings.Contains(err.Error(), "archived") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("next_product:2 after archiving: %v, want FailedPrecondition saying archived", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.ok("models", "--server", base, "archive", "next_product", "2", "--restore")
	if err := predict("next_product:2", &servingv1.Instance{Values: good}, nil); err != nil {
		t.Fatalf("next_product:2 restored: %v", err)
	}
}
