package rpcserver_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/serving/rpcserver"
)

// fakeFeatures is a FeatureService that answers from memory. GetFeatureView
// of "missing" is NotFound; of "slow" it reports on started and blocks
// until release is closed (or the request is cancelled).
type fakeFeatures struct {
	featurestorev1connect.UnimplementedFeatureServiceHandler

	started chan struct{}
	release chan struct{}

	mu   sync.Mutex
	seen map[string]string // X-Case header -> "protocol HTTP/x.y"
}

func newFake() *fakeFeatures {
	return &fakeFeatures{started: make(chan struct{}, 16), release: make(chan struct{}), seen: map[string]string{}}
}

func (f *fakeFeatures) ListFeatureViews(_ context.Context, req *connect.Request[featurestorev1.ListFeatureViewsRequest]) (*connect.Response[featurestorev1.ListFeatureViewsResponse], error) {
	f.mu.Lock()
	if c := req.Header().Get("X-Case"); c != "" {
		f.seen[c] = req.Peer().Protocol + " " + f.seen[c]
	}
	f.mu.Unlock()
	return connect.NewResponse(&featurestorev1.ListFeatureViewsResponse{DefinitionsVersion: 7}), nil
}

func (f *fakeFeatures) GetFeatureView(ctx context.Context, req *connect.Request[featurestorev1.GetFeatureViewRequest]) (*connect.Response[featurestorev1.GetFeatureViewResponse], error) {
	switch req.Msg.GetName() {
	case "missing":
		return nil, connect.NewError(connect.CodeNotFound, errors.New(`unknown feature view "missing"`))
	case "slow":
		f.started <- struct{}{}
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return connect.NewResponse(&featurestorev1.GetFeatureViewResponse{FeatureView: &featurestorev1.FeatureView{Name: req.Msg.GetName()}}), nil
}

// httpVersion wraps the service's handler to note the HTTP version each
// test case arrived over (the handler adds the RPC protocol in front).
func (f *fakeFeatures) httpVersion(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := r.Header.Get("X-Case"); c != "" {
			f.mu.Lock()
			f.seen[c] = r.Proto
			f.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (f *fakeFeatures) arrivedAs(c string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[c]
}

// server is one rpcserver.Serve on a loopback port.
type server struct {
	base   string
	addr   string
	fake   *fakeFeatures
	ready  atomic.Bool
	stop   context.CancelFunc
	done   chan error
	closed bool
}

func start(t *testing.T, shutdownTimeout time.Duration) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics := rpcserver.NewMetrics(reg)
	s := &server{addr: ln.Addr().String(), base: "http://" + ln.Addr().String(), fake: newFake(), done: make(chan error, 1)}
	s.ready.Store(true)
	path, h := featurestorev1connect.NewFeatureServiceHandler(s.fake, connect.WithInterceptors(metrics.Interceptor()))
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go func() {
		s.done <- rpcserver.Serve(ctx, ln, rpcserver.Options{
			Services:        []rpcserver.Service{{Name: featurestorev1connect.FeatureServiceName, Path: path, Handler: s.fake.httpVersion(h)}},
			Registry:        reg,
			Logger:          slog.New(slog.DiscardHandler),
			ShutdownTimeout: shutdownTimeout,
			Ready:           s.ready.Load,
		})
	}()
	t.Cleanup(func() {
		cancel()
		close(s.fake.release)
		if !s.closed {
			<-s.done
		}
	})
	return s
}

// wait returns what Serve returned, failing the test if it takes too long.
func (s *server) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.closed = true
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// h1Client speaks HTTP/1.1 only, as browsers and curl do without TLS.
func h1Client(t *testing.T) *http.Client {
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	// Idle connections go before the server stops (cleanups run last
	// first), so the stop does not wait for the client to hang up.
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// h2cClient speaks cleartext HTTP/2 with prior knowledge, as gRPC clients do.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestProtocolsShareOnePort(t *testing.T) {
	s := start(t, 0)
	cases := []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
		want   string
	}{
		{"connect over HTTP/1.1", h1Client(t), nil, "connect HTTP/1.1"},
		{"connect JSON over HTTP/1.1", h1Client(t), []connect.ClientOption{connect.WithProtoJSON()}, "connect HTTP/1.1"},
		{"connect GET over HTTP/1.1", h1Client(t), []connect.ClientOption{connect.WithHTTPGet()}, "connect HTTP/1.1"},
		{"connect over h2c", h2cClient(t), nil, "connect HTTP/2.0"},
		{"gRPC over h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}, "grpc HTTP/2.0"},
		{"gRPC-Web over HTTP/1.1", h1Client(t), []connect.ClientOption{connect.WithGRPCWeb()}, "grpcweb HTTP/1.1"},
		{"gRPC-Web over h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPCWeb()}, "grpcweb HTTP/2.0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client := featurestorev1connect.NewFeatureServiceClient(c.client, s.base, c.opts...)
			req := connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{})
			req.Header().Set("X-Case", c.name)
			resp, err := client.ListFeatureViews(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Msg.GetDefinitionsVersion() != 7 {
				t.Fatalf("answer %v", resp.Msg)
			}
			if got := s.fake.arrivedAs(c.name); got != c.want {
				t.Fatalf("arrived as %q, want %q", got, c.want)
			}
			// Errors keep their code over every protocol.
			_, err = client.GetFeatureView(context.Background(), connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "missing"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("error %v, want not_found", err)
			}
		})
	}
}

func TestHealthFollowsReadiness(t *testing.T) {
	s := start(t, 0)
	s.ready.Store(false)
	for _, proto := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"grpc", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}},
		{"connect", h1Client(t), nil},
	} {
		t.Run(proto.name, func(t *testing.T) {
			health := grpchealth.NewClient(proto.client, s.base, proto.opts...)
			check := func(service string) (grpchealth.Status, error) {
				resp, err := health.Check(context.Background(), &grpchealth.CheckRequest{Service: service})
				if err != nil {
					return 0, err
				}
				return resp.Status, nil
			}
			s.ready.Store(false)
			for _, svc := range []string{"", featurestorev1connect.FeatureServiceName} {
				if st, err := check(svc); err != nil || st != grpchealth.StatusNotServing {
					t.Fatalf("before ready, %q: %v %v, want NOT_SERVING", svc, st, err)
				}
			}
			s.ready.Store(true)
			for _, svc := range []string{"", featurestorev1connect.FeatureServiceName} {
				if st, err := check(svc); err != nil || st != grpchealth.StatusServing {
					t.Fatalf("when ready, %q: %v %v, want SERVING", svc, st, err)
				}
			}
			if _, err := check("no.such.Service"); connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("unknown service: %v, want not_found", err)
			}
		})
	}
}

func TestHealthWithoutReadyIsServing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rpcserver.Serve(ctx, ln, rpcserver.Options{Logger: slog.New(slog.DiscardHandler)}) }()
	h2c := h2cClient(t)
	health := grpchealth.NewClient(h2c, "http://"+ln.Addr().String(), connect.WithGRPC())
	resp, err := health.Check(context.Background(), &grpchealth.CheckRequest{})
	if err != nil || resp.Status != grpchealth.StatusServing {
		t.Fatalf("%v %v, want SERVING", resp, err)
	}
	// No registry: no /metrics.
	r, err := h1Client(t).Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics without a registry: %s", r.Status)
	}
	h2c.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestReflectionListsServices(t *testing.T) {
	s := start(t, 0)
	stream := grpcreflect.NewClient(h2cClient(t), s.base, connect.WithGRPC()).NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	if proc := stream.Spec().Procedure; proc != "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" {
		t.Fatalf("reflection answered on %s, want v1", proc)
	}
	found := false
	for _, n := range names {
		found = found || string(n) == featurestorev1connect.FeatureServiceName
	}
	if !found {
		t.Fatalf("reflection lists %v, not %s", names, featurestorev1connect.FeatureServiceName)
	}
	files, err := stream.FileContainingSymbol(featurestorev1connect.FeatureServiceName)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 || files[0].GetPackage() != "tailor.featurestore.v1" || len(files[0].GetService()) == 0 {
		t.Fatalf("descriptor of the service: %v", files)
	}
	if _, err := stream.FileContainingSymbol("no.such.Symbol"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown symbol: %v, want not_found", err)
	}
}

func TestMetricsCountCallsByProcedureAndCode(t *testing.T) {
	s := start(t, 0)
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(t), s.base, connect.WithGRPC())
	ctx := context.Background()
	for range 3 {
		if _, err := client.ListFeatureViews(ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "x"})); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "missing"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("%v, want not_found", err)
		}
	}
	if _, err := client.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{})); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("%v, want unimplemented", err)
	}
	// A server stream (the fake leaves Materialize unimplemented) is
	// counted too.
	stream, err := client.Materialize(ctx, connect.NewRequest(&featurestorev1.MaterializeRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnimplemented {
		t.Fatalf("materialize: %v, want unimplemented", stream.Err())
	}
	stream.Close()
	// A request its client gave up on is counted as such, not unknown.
	short, cancel := context.WithCancel(ctx)
	go func() { <-s.fake.started; cancel() }()
	if _, err := client.GetFeatureView(short, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "slow"})); connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("abandoned: %v, want canceled", err)
	}
	var got map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = scrape(t, s.base+"/metrics")
		if got[`tailor_rpc_requests_total{code="canceled",procedure="`+featurestorev1connect.FeatureServiceGetFeatureViewProcedure+`"}`] == 1 || time.Now().After(deadline) {
			break
		}
	}
	mat := featurestorev1connect.FeatureServiceMaterializeProcedure
	list := featurestorev1connect.FeatureServiceListFeatureViewsProcedure
	get := featurestorev1connect.FeatureServiceGetFeatureViewProcedure
	push := featurestorev1connect.FeatureServicePushProcedure
	want := map[string]float64{
		`tailor_rpc_requests_total{code="ok",procedure="` + list + `"}`:                 3,
		`tailor_rpc_requests_total{code="ok",procedure="` + get + `"}`:                  1,
		`tailor_rpc_requests_total{code="not_found",procedure="` + get + `"}`:           2,
		`tailor_rpc_requests_total{code="unimplemented",procedure="` + push + `"}`:      1,
		`tailor_rpc_duration_seconds_count{procedure="` + list + `"}`:                   3,
		`tailor_rpc_duration_seconds_count{procedure="` + get + `"}`:                    4,
		`tailor_rpc_requests_total{code="canceled",procedure="` + get + `"}`:            1,
		`tailor_rpc_requests_total{code="unknown",procedure="` + get + `"}`:             0,
		`tailor_rpc_duration_seconds_count{procedure="` + push + `"}`:                   1,
		`tailor_rpc_requests_total{code="unimplemented",procedure="` + mat + `"}`:       1,
		`tailor_rpc_duration_seconds_bucket{procedure="` + list + `",le="+Inf"}`:        3,
		`tailor_rpc_duration_seconds_bucket{procedure="` + get + `",le="1.6384"}`:       4,
		`tailor_rpc_duration_seconds_bucket{procedure="` + get + `",le="5e-05"}`:        -1, // present, any count
		`tailor_rpc_requests_total{code="not_found",procedure="` + list + `"}`:          0,  // absent
		`tailor_rpc_requests_total{code="ok",procedure="/grpc.health.v1.Health/Check"}`: 0,
	}
	for series, n := range want {
		v, ok := got[series]
		switch {
		case n == 0 && ok:
			t.Errorf("%s = %v, want no such series", series, v)
		case n < 0 && !ok:
			t.Errorf("%s missing", series)
		case n > 0 && v != n:
			t.Errorf("%s = %v (present: %v), want %v", series, v, ok, n)
		}
	}
	if sum := got[`tailor_rpc_duration_seconds_sum{procedure="`+get+`"}`]; sum <= 0 {
		t.Errorf("latency sum of %s = %v", get, sum)
	}
}

// scrape reads a Prometheus text exposition into series -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := h1Client(t).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGracefulStop: cancelling the context while a request is in flight
// stops accepting connections at once, lets the request finish with its
// answer, and then Serve returns nil.
func TestGracefulStop(t *testing.T) {
	for _, c := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect over HTTP/1.1", h1Client(t), nil},
		{"gRPC over h2c", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, 10*time.Second)
			client := featurestorev1connect.NewFeatureServiceClient(c.client, s.base, c.opts...)
			type result struct {
				name string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := client.GetFeatureView(context.Background(), connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "slow"}))
				if err != nil {
					res <- result{err: err}
					return
				}
				res <- result{name: resp.Msg.GetFeatureView().GetName()}
			}()
			select {
			case <-s.fake.started:
			case r := <-res:
				t.Fatalf("slow request returned before it started: %+v", r)
			case <-time.After(10 * time.Second):
				t.Fatal("slow request never reached the handler")
			}
			s.stop()
			// New connections are refused once the listener is closed.
			deadline := time.Now().Add(5 * time.Second)
			for {
				conn, err := net.DialTimeout("tcp", s.addr, time.Second)
				if err != nil {
					break
				}
				conn.Close()
				if time.Now().After(deadline) {
					t.Fatal("still accepting connections 5 s after the stop")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The request is still running, so Serve has not returned.
			select {
			case err := <-s.done:
				s.closed = true
				t.Fatalf("Serve returned %v with a request in flight", err)
			default:
			}
			s.fake.release <- struct{}{} // hand the slow request its answer
			select {
			case r := <-res:
				if r.err != nil || r.name != "slow" {
					t.Fatalf("in-flight request: %+v, want its answer", r)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("in-flight request did not finish")
			}
			if err := s.wait(t); err != nil {
				t.Fatalf("Serve: %v, want nil", err)
			}
		})
	}
}

// TestStopGivesUpAfterTimeout: a request that outlives ShutdownTimeout
// makes Serve return an error instead of hanging.
func TestStopGivesUpAfterTimeout(t *testing.T) {
	s := start(t, 100*time.Millisecond)
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(t), s.base, connect.WithGRPC())
	go func() {
		_, _ = client.GetFeatureView(context.Background(), connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "slow"}))
	}()
	<-s.fake.started
	s.stop()
	if err := s.wait(t); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Serve: %v, want a drain error", err)
	}
}

func TestServeReportsListenerFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = rpcserver.Serve(context.Background(), ln, rpcserver.Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("Serve on a closed listener: %v", err)
	}
}

// TestPprofOnlyWhenAsked: the profiling endpoints are mounted only with
// Options.Pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- rpcserver.Serve(ctx, ln, rpcserver.Options{Logger: slog.New(slog.DiscardHandler), Pprof: on})
		}()
		resp, err := http.Get("http://" + ln.Addr().String() + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; resp.StatusCode != want {
			t.Errorf("pprof %v: status %d, want %d", on, resp.StatusCode, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
