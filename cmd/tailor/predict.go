package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/tablefile"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

// keyValues parses key=value[,key=value] into text values.
func keyValues(flag, s string) (map[string]*featurestorev1.Value, error) {
	kv, err := pairs(flag, s)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*featurestorev1.Value, len(kv))
	for k, v := range kv {
		out[k] = &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: v}}
	}
	return out, nil
}

// pairs parses key=value[,key=value].
func pairs(flag, s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value pairs separated by commas", flag, s)
		}
		out[k] = v
	}
	return out, nil
}

// numbers parses key=number[,key=number].
func numbers(flag string, list []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, s := range list {
		for _, kv := range splitList(s) {
			k, v, ok := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || k == "" || err != nil {
				return nil, fmt.Errorf("%s %q: want key=number pairs separated by commas", flag, s)
			}
			out[k] = f
		}
	}
	return out, nil
}

func (a *app) printJSON(m proto.Message) error {
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, string(out))
	return nil
}

func (a *app) predictCmd() *cobra.Command {
	var server, model, ctxFlag, at string
	var entities, values []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "predict --model REF --entity KEY=VALUE [--entity ...] [--context K=V,...] [--value K=N,...] [--at TIME] --server URL",
		Short: "Run a registered model for entity rows and print its outputs as JSON",
		Long: "predict calls Predict on a tailor server: REF is name, name@alias or name:version; each\n" +
			"--entity is one instance (its join keys); --context and --value apply to every instance.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(entities) == 0 {
				return fmt.Errorf("no instances: pass --entity key=value")
			}
			ctxVals, err := keyValues("--context", ctxFlag)
			if err != nil {
				return err
			}
			vals, err := numbers("--value", values)
			if err != nil {
				return err
			}
			req := &servingv1.PredictRequest{Model: model}
			if at != "" {
				t, err := tablefile.ParseTimestamp(at)
				if err != nil {
					return fmt.Errorf("--at: %w", err)
				}
				req.RequestTime = timestamppb.New(t)
			}
			for _, e := range entities {
				keys, err := keyValues("--entity", e)
				if err != nil {
					return err
				}
				req.Instances = append(req.Instances, &servingv1.Instance{Entities: keys, Context: ctxVals, Values: vals})
			}
			client := servingv1connect.NewPredictionServiceClient(&http.Client{Timeout: timeout}, server)
			resp, err := client.Predict(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			return a.printJSON(resp.Msg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	f.StringVar(&model, "model", "", "model: name, name@alias or name:version")
	f.StringArrayVar(&entities, "entity", nil, "one instance's join keys: key=value[,key=value]; repeat for more")
	f.StringVar(&ctxFlag, "context", "", "request context: key=value[,key=value] (device, timezone, ...)")
	f.StringArrayVar(&values, "value", nil, "request values: key=number[,key=number]")
	f.StringVar(&at, "at", "", "request time hour_of_day and day_of_week derive from (default: the server's now)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func (a *app) nbaCmd() *cobra.Command {
	var server, entity, ctxFlag, exclude, channels string
	var values []string
	var k int
	var timeout time.Duration
	var format string
	cmd := &cobra.Command{
		Use:   "nba --entity customer_id=C [--k 5] [--exclude P,...] [--channels C,...] [--context K=V,...] --server URL",
		Short: "Ask a server for a customer's next best action: products, when, which channel",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := keyValues("--entity", entity)
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				return fmt.Errorf("name the customer: --entity customer_id=...")
			}
			ctxVals, err := keyValues("--context", ctxFlag)
			if err != nil {
				return err
			}
			vals, err := numbers("--value", values)
			if err != nil {
				return err
			}
			req := &servingv1.NextBestActionRequest{Entities: keys, Context: ctxVals, Values: vals, K: int32(k),
				Exclude: splitList(exclude), AllowedChannels: splitList(channels)}
			client := servingv1connect.NewPredictionServiceClient(&http.Client{Timeout: timeout}, server)
			resp, err := client.NextBestAction(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			switch format {
			case "json":
				return a.printJSON(resp.Msg)
			case "text":
				printNBA(a.out, entity, resp.Msg)
				return nil
			}
			return fmt.Errorf("--format %q: json or text", format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "json", "json, or text for people")
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	f.StringVar(&entity, "entity", "", "the customer's join keys: key=value[,key=value]")
	f.IntVar(&k, "k", 5, "how many products")
	f.StringVar(&exclude, "exclude", "", "products never to return, comma-separated")
	f.StringVar(&channels, "channels", "", "channels the caller can use, comma-separated (default: all)")
	f.StringVar(&ctxFlag, "context", "", "request context: key=value[,key=value] (device, timezone, ...)")
	f.StringArrayVar(&values, "value", nil, "request values: key=number[,key=number]")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

// printNBA writes a next best action for people: the products, when, and
// through which channel, with the scores behind each.
func printNBA(w io.Writer, who string, r *servingv1.NextBestActionResponse) {
	var models []string
	for _, m := range r.GetModels() {
		models = append(models, fmt.Sprintf("%s:%d", m.GetName(), m.GetVersion()))
	}
	fmt.Fprintf(w, "%s (models %s)\n", who, strings.Join(models, ", "))
	scored := func(ls []*servingv1.ScoredLabel) string {
		parts := make([]string, len(ls))
		for i, l := range ls {
			parts[i] = fmt.Sprintf("%s %.2f", l.GetLabel(), l.GetScore())
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "  products: %s\n", scored(r.GetProducts()))
	var timing []string
	for _, b := range r.GetTiming() {
		timing = append(timing, fmt.Sprintf("%s %.2f", b.GetLabel(), b.GetProbability()))
	}
	fmt.Fprintf(w, "  send at:  %s (within %s)\n", r.GetSendAt().AsTime().Format(time.RFC3339), strings.Join(timing, ", "))
	fmt.Fprintf(w, "  channel:  %s (%s)\n", r.GetChannel(), scored(r.GetChannels()))
	if r.GetFallback() {
		fmt.Fprintf(w, "  fallback: %s\n", strings.Join(r.GetFallbackReasons(), "; "))
	}
}
