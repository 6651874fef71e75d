package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// startServe runs `tailor serve` on a free loopback port and returns its
// base URL and a function that stops it (SIGTERM's path: the context) and
// returns its error.
func startServe(t *testing.T, c *cli) (string, func() error) {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRoot(pw, io.Discard)
	root.SetArgs([]string{"--clickhouse", chDSN, "--database", c.db, "serve", "--addr", "127.0.0.1:0", "--reload", "200ms"})
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

	// Health, reflection and metrics share the port.
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
	// The online RPCs are not built yet and say so with the right code.
	_, err = client.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("GetOnlineFeatures: %v", err)
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
