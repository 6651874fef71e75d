package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/serving/rpcserver"
)

func (a *app) serveCmd() *cobra.Command {
	var addr string
	var reload time.Duration
	var maxRequest int
	var onlineMemory bytesFlag = 1 << 30
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
			tier := onlinetier.New(onlinetier.Options{BudgetBytes: int64(onlineMemory)})
			online := onlinestore.New(store, tier, onlinestore.Options{})
			if err := tier.Register(reg); err != nil {
				return err
			}
			if err := online.Register(reg); err != nil {
				return err
			}
			fs, err := featureserver.New(ctx, store, online, reg, a.log)
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
	cmd.Flags().Var(&onlineMemory, "online-memory", "memory budget of the online tier, e.g. 512MiB, 1GiB")
	return cmd
}

// bytesFlag is a byte size given as a number with an optional KiB, MiB,
// GiB (or KB, MB, GB) suffix.
type bytesFlag int64

func (b *bytesFlag) String() string { return fmt.Sprintf("%dMiB", int64(*b)>>20) }
func (b *bytesFlag) Type() string   { return "size" }
func (b *bytesFlag) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a size like 512MiB or 1GiB", s)
	}
	*b = bytesFlag(n * mult)
	return nil
}
