// Package rpcserver serves Connect services on one port: Connect, gRPC and
// gRPC-Web over HTTP/1.1 and cleartext HTTP/2, with gRPC health and
// reflection, Prometheus metrics at /metrics, and a graceful stop.
package rpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tailorhq/tailor/featurestore/rpcerr"
)

// Service is one Connect service to mount.
type Service struct {
	// Name is the fully qualified service name, for health and reflection.
	Name string
	// Path and Handler are what the generated New...Handler returns.
	Path    string
	Handler http.Handler
}

// Options configures Serve.
type Options struct {
	Services []Service
	// Registry receives the RPC metrics and is served at /metrics.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// ShutdownTimeout bounds the drain of in-flight requests (default 15s).
	ShutdownTimeout time.Duration
	// Ready, when set, reports whether the services may take traffic; the
	// health service says NOT_SERVING until it returns true.
	Ready func() bool
	// Pprof mounts Go's profiling endpoints under /debug/pprof/.
	Pprof bool
}

// Serve serves on ln until ctx is done, then stops accepting, lets
// in-flight requests finish within the shutdown timeout, and returns.
func Serve(ctx context.Context, ln net.Listener, opt Options) error {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.ShutdownTimeout <= 0 {
		opt.ShutdownTimeout = 15 * time.Second
	}
	mux := http.NewServeMux()
	names := make([]string, 0, len(opt.Services))
	for _, s := range opt.Services {
		mux.Handle(s.Path, s.Handler)
		names = append(names, s.Name)
	}
	mux.Handle(grpchealth.NewHandler(&checker{services: names, ready: opt.Ready}))
	reflector := grpcreflect.NewStaticReflector(names...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	if opt.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if opt.Registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{}))
	}

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opt.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	opt.Logger.Info("serving", "addr", ln.Addr().String(), "services", names)

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opt.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	opt.Logger.Info("stopped serving", "addr", ln.Addr().String(), "took", time.Since(start))
	if err != nil {
		return fmt.Errorf("drain %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// checker answers gRPC health checks for the mounted services.
type checker struct {
	services []string
	ready    func() bool
}

func (c *checker) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, s := range c.services {
		known = known || s == req.Service
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if c.ready != nil && !c.ready() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Metrics records request counts by procedure and code, and latency
// histograms by procedure.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the RPC metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailor_rpc_requests_total", Help: "RPCs handled, by procedure and result code.",
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tailor_rpc_duration_seconds", Help: "RPC handling time, by procedure.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50µs .. ~1.6s
		}, []string{"procedure"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Interceptor returns the Connect interceptor that feeds the metrics, for
// unary and streaming procedures alike (a stream is timed to its end).
func (m *Metrics) Interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *Metrics }

// observe counts a request by its code: the code the client gets, which
// for a handler that returns its context's error is Canceled or
// DeadlineExceeded, not unknown.
func (i metricsInterceptor) observe(ctx context.Context, proc string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = rpcerr.Code(ctx, err).String()
	}
	i.m.requests.WithLabelValues(proc, code).Inc()
	i.m.latency.WithLabelValues(proc).Observe(time.Since(start).Seconds())
}

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		i.observe(ctx, req.Spec().Procedure, start, err)
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.observe(ctx, conn.Spec().Procedure, start, err)
		return err
	}
}
