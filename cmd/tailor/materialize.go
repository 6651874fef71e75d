package main

import (
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/tablefile"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

func (a *app) materializeCmd() *cobra.Command {
	var server, start, end string
	var views []string
	var incremental bool
	cmd := &cobra.Command{
		Use:   "materialize [--views V,...] [--start T --end T] [--incremental] --server URL",
		Short: "Load the latest feature rows from ClickHouse into a running server's online tier",
		Long: "materialize asks a tailor server to load the latest row of every key of the given views\n" +
			"(default: all) into its online tier. The latest row per key is selected inside ClickHouse\n" +
			"and streamed in blocks; progress is shown while it runs.\n\n" +
			"--start/--end load only the keys whose latest row has an event time in that window (the\n" +
			"row loaded is always the key's latest). --incremental loads only the keys with rows stored\n" +
			"since the view's previous materialization; each run records its watermark in ClickHouse.\n" +
			"Times are RFC 3339, YYYY-MM-DD or Unix seconds.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &featurestorev1.MaterializeRequest{FeatureViews: views, Incremental: incremental}
			for _, b := range []struct {
				flag, text string
				dst        **timestamppb.Timestamp
			}{{"--start", start, &req.Start}, {"--end", end, &req.End}} {
				if b.text == "" {
					continue
				}
				t, err := tablefile.ParseTimestamp(b.text)
				if err != nil {
					return fmt.Errorf("%s: %w", b.flag, err)
				}
				*b.dst = timestamppb.New(t)
			}
			client := featurestorev1connect.NewFeatureServiceClient(http.DefaultClient, server)
			stream, err := client.Materialize(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			defer stream.Close()
			p := newProgress(a.errOut)
			for stream.Receive() {
				msg := stream.Msg()
				if !msg.GetDone() {
					for _, v := range msg.GetViews() {
						p.update("materialize "+v.GetFeatureView(), v.GetKeys())
					}
					continue
				}
				p.done()
				for _, v := range msg.GetViews() {
					kind := "all keys"
					if v.GetIncremental() {
						kind = "keys changed since the last run"
					}
					d := v.GetDuration().AsDuration()
					fmt.Fprintf(a.out, "%s: %d keys loaded (%s) in %s (%.0f keys/s); watermark %s\n", v.GetFeatureView(), v.GetKeys(), kind,
						d.Round(time.Millisecond), float64(v.GetKeys())/max(d.Seconds(), 1e-9), v.GetWatermark().AsTime().Format(time.RFC3339))
				}
			}
			p.done()
			if err := stream.Err(); err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	f.StringSliceVar(&views, "views", nil, "feature views to load (default: all)")
	f.StringVar(&start, "start", "", "load only keys whose latest row's event time is at or after this")
	f.StringVar(&end, "end", "", "load only keys whose latest row's event time is at or before this")
	f.BoolVar(&incremental, "incremental", false, "load only keys with rows stored since the previous materialization")
	return cmd
}
