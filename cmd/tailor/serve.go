package main

import (
	"fmt"
	"net"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/serving/rpcserver"
)

func (a *app) serveCmd() *cobra.Command {
	var addr string
	var reload time.Duration
	var maxRequest int
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the FeatureService over Connect, gRPC and gRPC-Web on one port",
		Long: "serve answers on --addr with Connect, gRPC and gRPC-Web (HTTP/1.1 and cleartext HTTP/2),\n" +
			"gRPC health and reflection, and Prometheus metrics at /metrics. Newly applied definitions\n" +
			"are picked up within --reload. SIGTERM or SIGINT stops accepting, drains and exits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			store, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			metrics := rpcserver.NewMetrics(reg)
			fs, err := featureserver.New(ctx, store, reg, a.log)
			if err != nil {
				return err
			}
			go fs.WatchDefinitions(ctx, reload)
			path, handler := featurestorev1connect.NewFeatureServiceHandler(fs,
				connect.WithInterceptors(metrics.Interceptor()),
				connect.WithReadMaxBytes(maxRequest))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			fmt.Fprintf(a.out, "serving on %s\n", ln.Addr())
			return rpcserver.Serve(ctx, ln, rpcserver.Options{
				Services: []rpcserver.Service{{Name: featurestorev1connect.FeatureServiceName, Path: path, Handler: handler}},
				Registry: reg,
				Logger:   a.log,
			})
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	cmd.Flags().DurationVar(&reload, "reload", time.Second, "how often to look for newly applied definitions")
	cmd.Flags().IntVar(&maxRequest, "max-request-bytes", 16<<20, "largest request accepted")
	return cmd
}
