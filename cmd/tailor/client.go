package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

func (a *app) featuresCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "features", Short: "Ask a running server for online features"}
	var server, service, refs string
	var entities []string
	var fullNames bool
	var timeout time.Duration
	get := &cobra.Command{
		Use:   "get --server URL (--service NAME | --features REFS) --entity KEY=VALUE[,KEY=VALUE] [--entity ...]",
		Short: "Print the latest features of entity rows as JSON",
		Long: "get calls GetOnlineFeatures on a tailor server. Each --entity is one entity row:\n" +
			"its join keys as key=value pairs separated by commas, e.g. --entity customer_id=c1,product_id=42.\n" +
			"The answer is printed as protobuf JSON (int64 values as exact decimal strings).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &featurestorev1.GetOnlineFeaturesRequest{FullFeatureNames: fullNames}
			switch {
			case service != "" && refs != "":
				return fmt.Errorf("pass either --service or --features, not both")
			case service != "":
				req.Features = &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: service}
			case refs != "":
				req.Features = &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: splitList(refs)}}
			default:
				return fmt.Errorf("no features requested: pass --service NAME or --features view:feature,...")
			}
			if len(entities) == 0 {
				return fmt.Errorf("no entity rows: pass --entity key=value")
			}
			for _, e := range entities {
				keys, err := keyValues("--entity", e)
				if err != nil {
					return err
				}
				req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: keys})
			}
			client := featurestorev1connect.NewFeatureServiceClient(&http.Client{Timeout: timeout}, server)
			resp, err := client.GetOnlineFeatures(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp.Msg)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.out, string(out))
			return nil
		},
	}
	f := get.Flags()
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	f.StringVar(&service, "service", "", "feature service to return")
	f.StringVar(&refs, "features", "", "comma-separated feature references: view:feature or view:*")
	f.StringArrayVar(&entities, "entity", nil, "one entity row: key=value[,key=value]; repeat for more rows")
	f.BoolVar(&fullNames, "full-names", false, "name features view__feature")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	cmd.AddCommand(get)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
