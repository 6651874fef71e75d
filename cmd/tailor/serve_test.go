package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/chserver"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// startServe runs `tailor serve` on a free loopback port and returns its
// base URL and a function that stops it (SIGTERM's path: the context) and
// returns its error. extra are more serve flags.
func startServe(t *testing.T, c *cli, extra ...string) (string, func() error) {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRoot(pw, io.Discard)
	root.SetArgs(append([]string{"--clickhouse", c.server(), "--database", c.db, "serve", "--addr", "127.0.0.1:0", "--reload", "200ms"}, extra...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve did not start: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	addr := strings.TrimSpace(strings.TrimPrefix(line, "serving on "))
	stop := func() error { cancel(); return <-done }
	t.Cleanup(func() { cancel() })
	return "http://" + addr, stop
}

func TestServeDefinitionsOverConnectAndGRPC(t *testing.T) {
	c, _ := tourSetup(t)
	base, stop := startServe(t, c)
	ctx := context.Background()

	for name, opts := range map[string][]connect.ClientOption{"connect": nil, "grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}} {
		t.Run(name, func(t *testing.T) {
			client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base, opts...)
			resp, err := client.ListFeatureViews(ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, v := range resp.Msg.GetFeatureViews() {
				names = append(names, v.GetName())
			}
			if strings.Join(names, ",") != "customer_stats,product_stats" || resp.Msg.GetDefinitionsVersion() != 1 {
				t.Fatalf("views = %v at version %d", names, resp.Msg.GetDefinitionsVersion())
			}
			v, err := client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "customer_stats"}))
			if err != nil {
				t.Fatal(err)
			}
			fv := v.Msg.GetFeatureView()
			if fv.GetTtl().AsDuration() != 48*time.Hour || fv.GetEntities()[0].GetJoinKey() != "customer_id" ||
				fv.GetFeatures()[0].GetType() != featurestorev1.ValueType_VALUE_TYPE_INT64 || fv.GetTable() != c.db+".fv_customer_stats" {
				t.Fatalf("customer_stats = %v", fv)
			}
			_, err = client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "nope"}))
			if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `"nope"`) {
				t.Fatalf("unknown view: %v", err)
			}
			svcs, err := client.ListFeatureServices(ctx, connect.NewRequest(&featurestorev1.ListFeatureServicesRequest{}))
			if err != nil || len(svcs.Msg.GetFeatureServices()) != 1 || svcs.Msg.GetFeatureServices()[0].GetName() != "svc" {
				t.Fatalf("services: %v %v", svcs, err)
			}
		})
	}

	// Browsers and curl speak the Connect protocol over HTTP/1.1.
	h1 := featurestorev1connect.NewFeatureServiceClient(http.DefaultClient, base)
	if _, err := h1.ListFeatureViews(ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{})); err != nil {
		t.Fatalf("Connect over HTTP/1.1: %v", err)
	}

	// Health, reflection and metrics share the port; health says SERVING
	// once the warm start is done.
	waitServing(t, base, 30*time.Second)
	health := grpchealth.NewClient(h2cClient(), base, connect.WithGRPC())
	if st, err := health.Check(ctx, &grpchealth.CheckRequest{Service: featurestorev1connect.FeatureServiceName}); err != nil || st.Status != grpchealth.StatusServing {
		t.Fatalf("health: %v %v", st, err)
	}
	stream := grpcreflect.NewClient(h2cClient(), base).NewStream(ctx)
	services, err := stream.ListServices()
	stream.Close()
	if err != nil || !containsName(services, featurestorev1connect.FeatureServiceName) {
		t.Fatalf("reflection lists %v (%v)", services, err)
	}
	metrics := httpGet(t, base+"/metrics")
	mustContain(t, metrics, `tailor_rpc_requests_total{code="ok",procedure="/tailor.featurestore.v1.FeatureService/ListFeatureViews"}`,
		`code="not_found"`, "tailor_rpc_duration_seconds_bucket")

	// A newly applied definition is served within 2 s, without a restart.
	added := strings.Replace(tourDefs, "feature_services:", `  - name: fresh
    entities: [customer]
    features: [{name: x, type: float64}]
feature_services:`, 1)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": added}))
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "fresh"}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new view not served within 2 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Fatal("server still answers after stop")
	}
}

func containsName(names []protoreflect.FullName, want string) bool {
	for _, n := range names {
		if string(n) == want {
			return true
		}
	}
	return false
}

// h2cClient speaks cleartext HTTP/2 with prior knowledge, as gRPC clients
// do; the Connect protocol runs over it too.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return string(b)
}

func TestServeGetOnlineFeatures(t *testing.T) {
	c, dir := tourSetup(t)
	// A fresh row, inside customer_stats' 48h ttl.
	now := time.Now().UTC().Truncate(time.Second)
	fresh := filepath.Join(dir, "fresh.csv")
	writeFile(t, fresh, "customer_id,event_ts,orders_7d,spend,segment\nc5,"+now.Add(-time.Hour).Format(time.RFC3339)+",42,1.5,\n")
	c.ok("ingest", "customer_stats", fresh)
	base, _ := startServe(t, c)
	ctx := context.Background()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	i64 := func(n int64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
	}
	row := func(cust string, prod int64) *featurestorev1.EntityRow {
		return &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{"customer_id": str(cust), "product_id": i64(prod)}}
	}
	req := &featurestorev1.GetOnlineFeaturesRequest{
		Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "svc"},
		Entities: []*featurestorev1.EntityRow{row("c5", 9007199254740993), row("c1", 9007199254740993), row("c3", 9007199254740994)},
	}
	// Twice: the first read goes through to ClickHouse, the second is
	// answered by the tier; both must be the same.
	for pass := range 2 {
		resp, err := client.GetOnlineFeatures(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if got := strings.Join(resp.Msg.GetFeatureNames(), ","); got != "orders_7d,spend,segment,popularity" {
			t.Fatalf("feature names %s", got)
		}
		type cell struct {
			status featurestorev1.FeatureStatus
			value  string
		}
		var got [][]cell
		for _, r := range resp.Msg.GetRows() {
			var cells []cell
			for _, v := range r.GetValues() {
				val := "null"
				if v.GetValue() != nil {
					val = v.GetValue().String()
				}
				cells = append(cells, cell{v.GetStatus(), val})
			}
			got = append(got, cells)
		}
		present, outside, missing := featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT, featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE, featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND
		pop := (&featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: 0.25}}).String()
		want := [][]cell{
			{{present, i64(42).String()}, {present, (&featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: 1.5}}).String()}, {present, "null"}, {present, pop}},
			{{outside, "null"}, {outside, "null"}, {outside, "null"}, {present, pop}},
			{{missing, "null"}, {missing, "null"}, {missing, "null"}, {missing, "null"}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("pass %d:\n got  %v\n want %v", pass, got, want)
		}
		if ts := resp.Msg.GetRows()[0].GetValues()[0].GetEventTimestamp().AsTime(); !ts.Equal(now.Add(-time.Hour)) {
			t.Fatalf("event time %s, want %s", ts, now.Add(-time.Hour))
		}
	}
	bad := []struct {
		name string
		req  *featurestorev1.GetOnlineFeaturesRequest
		code connect.Code
		want string
	}{
		{"unknown feature", &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"customer_stats:nope"}}}, Entities: req.Entities}, connect.CodeInvalidArgument, `"customer_stats:nope"`},
		{"unknown service", &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "nope"}}, connect.CodeInvalidArgument, `"nope"`},
		{"missing key", &featurestorev1.GetOnlineFeaturesRequest{Features: req.Features, Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": str("c1")}}}}, connect.CodeInvalidArgument, `"product_id"`},
		{"wrong key type", &featurestorev1.GetOnlineFeaturesRequest{Features: req.Features, Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": i64(1), "product_id": i64(1)}}}}, connect.CodeInvalidArgument, `"customer_id"`},
		{"too many rows", &featurestorev1.GetOnlineFeaturesRequest{Features: req.Features, Entities: make([]*featurestorev1.EntityRow, 10_001)}, connect.CodeResourceExhausted, "10000"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := client.GetOnlineFeatures(ctx, connect.NewRequest(b.req))
			if connect.CodeOf(err) != b.code || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("error %v, want code %s naming %s", err, b.code, b.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestServePush(t *testing.T) {
	c, _ := tourSetup(t)
	base, _ := startServe(t, c)
	ctx := context.Background()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	i64 := func(n int64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
	}
	f64 := func(f float64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: f}}
	}
	now := time.Now().UTC().Truncate(time.Second)
	push := func(at time.Time, orders int64) error {
		_, err := client.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{{
			Values:         map[string]*featurestorev1.Value{"customer_id": str("c1"), "orders_7d": i64(orders), "spend": f64(2.5)},
			EventTimestamp: timestamppb.New(at),
		}}}))
		return err
	}
	get := func() (*featurestorev1.FeatureValue, error) {
		resp, err := client.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"customer_stats:orders_7d"}}},
			Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": str("c1")}}},
		}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetRows()[0].GetValues()[0], nil
	}
	// Cache c1's old (outside max age) row first, then push over it.
	if v, err := get(); err != nil || v.GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE {
		t.Fatalf("before push: %v %v", v, err)
	}
	if err := push(now.Add(-time.Minute), 77); err != nil {
		t.Fatal(err)
	}
	if v, err := get(); err != nil || v.GetValue().GetInt64Value() != 77 || !v.GetEventTimestamp().AsTime().Equal(now.Add(-time.Minute)) {
		t.Fatalf("right after push: %v %v", v, err)
	}
	// An older push is stored but does not replace the latest row.
	if err := push(now.Add(-time.Hour), 5); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(); v.GetValue().GetInt64Value() != 77 {
		t.Fatalf("an older push replaced the latest row: %v", v)
	}
	if got := c.sql("SELECT orders_7d, spend FROM " + c.db + ".fv_customer_stats WHERE customer_id = 'c1' ORDER BY event_ts DESC LIMIT 2"); got != "77\t2.5\n5\t2.5\n" {
		t.Fatalf("stored rows:\n%s", got)
	}
	before := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats")
	bad := []struct {
		name string
		req  *featurestorev1.PushRequest
		want string
	}{
		{"unknown view", &featurestorev1.PushRequest{FeatureView: "nope", Rows: []*featurestorev1.PushRow{{}}}, `"nope"`},
		{"unknown column", &featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{{
			Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "oops": i64(1)}, EventTimestamp: timestamppb.New(now)}}}, `"oops"`},
		{"wrong type", &featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1")}, EventTimestamp: timestamppb.New(now)},
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "orders_7d": str("many")}, EventTimestamp: timestamppb.New(now)}}}, `row 1: feature "orders_7d"`},
		{"missing key", &featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{{
			Values: map[string]*featurestorev1.Value{"orders_7d": i64(1)}, EventTimestamp: timestamppb.New(now)}}}, `"customer_id"`},
		{"no event time", &featurestorev1.PushRequest{FeatureView: "customer_stats", Rows: []*featurestorev1.PushRow{{
			Values: map[string]*featurestorev1.Value{"customer_id": str("c1")}}}}, "event_timestamp"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := client.Push(ctx, connect.NewRequest(b.req))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("error %v, want InvalidArgument naming %s", err, b.want)
			}
		})
	}
	if after := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats"); after != before {
		t.Fatalf("a refused push stored rows: %s -> %s", before, after)
	}
}

func TestFeaturesGetCLI(t *testing.T) {
	c, _ := tourSetup(t)
	// No warm start: the tier counts below assume an empty tier.
	base, _ := startServe(t, c, "--warm-start=false")
	out := c.ok("features", "get", "--server", base, "--service", "svc",
		"--entity", "customer_id=c1,product_id=9007199254740993", "--entity", "customer_id=c3,product_id=9007199254740994")
	var resp featurestorev1.GetOnlineFeaturesResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("output is not the response as JSON: %v\n%s", err, out)
	}
	if len(resp.GetRows()) != 2 || resp.GetRows()[0].GetValues()[3].GetValue().GetFloat32Value() != 0.25 ||
		resp.GetRows()[1].GetValues()[3].GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND {
		t.Fatalf("answer:\n%s", out)
	}
	mustContain(t, c.fails("features", "get", "--server", base, "--service", "nope", "--entity", "customer_id=c1"), "invalid_argument", `"nope"`)
	mustContain(t, httpGet(t, base+"/metrics"), "tailor_online_tier_hits_total", "tailor_online_tier_misses_total 4",
		"tailor_online_tier_bytes", "tailor_online_read_through_queries_total 2", "tailor_online_read_through_seconds_bucket")
	mustContain(t, c.fails("features", "get", "--server", base, "--service", "svc", "--entity", "customer_id"), "key=value")
	mustContain(t, c.fails("features", "get", "--server", base, "--service", "svc", "--entity", "customer_id=c1,product_id=1", "--entity", "customer_id=c2,product_id=x"), "invalid_argument", `"product_id"`, `"x"`)
}

// TestServeSurvivesClickHouseOutage: with ClickHouse stopped, a key the
// tier holds is still answered, a key it does not hold gives Unavailable
// promptly (no hang, no panic), and the server recovers when ClickHouse
// returns.
func TestServeSurvivesClickHouseOutage(t *testing.T) {
	srv, err := chserver.Start(context.Background(), chserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())
	c := &cli{t: t, db: "outage", dsn: srv.DSN()}
	dir := writeFiles(t, map[string]string{"repo/defs.yaml": tourDefs, "p.csv": tourProductStats})
	c.ok("apply", filepath.Join(dir, "repo"))
	c.ok("ingest", "product_stats", filepath.Join(dir, "p.csv"))
	base, stop := startServe(t, c)
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	get := func(product int64) (*featurestorev1.FeatureValue, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"product_stats:popularity"}}},
			Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"product_id": {Kind: &featurestorev1.Value_Int64Value{Int64Value: product}}}}},
		}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetRows()[0].GetValues()[0], nil
	}
	if v, err := get(9007199254740993); err != nil || v.GetValue().GetFloat32Value() != 0.25 {
		t.Fatalf("before the outage: %v %v", v, err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if v, err := get(9007199254740993); err != nil || v.GetValue().GetFloat32Value() != 0.25 {
		t.Fatalf("a cached key during the outage: %v %v", v, err)
	}
	start := time.Now()
	_, err = get(42)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("an uncached key during the outage: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("Unavailable took %s", took)
	}
	if err := srv.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := get(42)
		if err == nil && v.GetStatus() == featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after ClickHouse returned: %v %v", v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestPushSurvivesRestart: an acknowledged push is in ClickHouse, so a new
// server process (with an empty tier) answers it.
func TestPushSurvivesRestart(t *testing.T) {
	c, _ := tourSetup(t)
	base, stop := startServe(t, c)
	ctx := context.Background()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	now := time.Now().UTC().Truncate(time.Second)
	_, err := client.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "product_stats", Rows: []*featurestorev1.PushRow{{
		Values: map[string]*featurestorev1.Value{
			"product_id": {Kind: &featurestorev1.Value_Int64Value{Int64Value: 7}},
			"popularity": {Kind: &featurestorev1.Value_Float32Value{Float32Value: 0.5}},
		},
		EventTimestamp: timestamppb.New(now),
	}}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	base2, _ := startServe(t, c)
	client2 := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base2)
	resp, err := client2.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"product_stats:popularity"}}},
		Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"product_id": {Kind: &featurestorev1.Value_Int64Value{Int64Value: 7}}}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if v := resp.Msg.GetRows()[0].GetValues()[0]; v.GetValue().GetFloat32Value() != 0.5 || !v.GetEventTimestamp().AsTime().Equal(now) {
		t.Fatalf("after restart: %v", v)
	}
}

func TestPushCLI(t *testing.T) {
	c, dir := tourSetup(t)
	base, _ := startServe(t, c)
	now := time.Now().UTC().Truncate(time.Second)
	file := filepath.Join(dir, "push.csv")
	writeFile(t, file, "customer_id,event_ts,orders_7d,spend\nc8,"+now.Format(time.RFC3339)+",3,\nc9,"+now.Format(time.RFC3339)+",4,9.5\n")
	mustContain(t, c.ok("push", "customer_stats", file, "--server", base, "--batch-rows", "1"), "2 rows pushed")
	out := c.ok("features", "get", "--server", base, "--features", "customer_stats:orders_7d,customer_stats:spend", "--entity", "customer_id=c8", "--entity", "customer_id=c9")
	var resp featurestorev1.GetOnlineFeaturesResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	r0, r1 := resp.GetRows()[0].GetValues(), resp.GetRows()[1].GetValues()
	if r0[0].GetValue().GetInt64Value() != 3 || r0[1].GetValue() != nil || r0[1].GetStatus() != featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT ||
		r1[0].GetValue().GetInt64Value() != 4 || r1[1].GetValue().GetFloat64Value() != 9.5 {
		t.Fatalf("pushed rows read back as:\n%s", out)
	}
	bad := filepath.Join(dir, "bad.csv")
	writeFile(t, bad, "customer_id,event_ts,orders_7d\nc10,"+now.Format(time.RFC3339)+",x\n")
	mustContain(t, c.fails("push", "customer_stats", bad, "--server", base), "row 1", `"orders_7d"`, `"x"`)
	extra := filepath.Join(dir, "extra.csv")
	writeFile(t, extra, "customer_id,event_ts,oops\nc10,"+now.Format(time.RFC3339)+",1\n")
	mustContain(t, c.fails("push", "customer_stats", extra, "--server", base), `"oops"`)
	mustContain(t, c.fails("push", "nope", file, "--server", base), "not_found", `"nope"`)
	if got := c.sql("SELECT count() FROM " + c.db + ".fv_customer_stats WHERE customer_id = 'c10'"); got != "0\n" {
		t.Fatalf("a refused push stored rows: %s", got)
	}
}
