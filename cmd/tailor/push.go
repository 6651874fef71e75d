package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

func (a *app) pushCmd() *cobra.Command {
	var server, format string
	var batch int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "push VIEW FILE... --server URL",
		Short: "Push rows of a CSV, Parquet or Arrow file to a running server",
		Long: "push sends the rows of each FILE to a tailor server's Push RPC in batches: the server\n" +
			"stores each batch in ClickHouse before it answers, and serves the rows at once.\n" +
			"Columns are matched by name, as for `tailor ingest`. Each batch carries an idempotency key,\n" +
			"and a batch the server answers Unavailable is sent again with it (up to five times, backing\n" +
			"off), so a retry never stores its rows twice.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			client := featurestorev1connect.NewFeatureServiceClient(&http.Client{Timeout: timeout}, server)
			resp, err := client.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: args[0]}))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			v := resp.Msg.GetFeatureView()
			types := map[string]definitions.ValueType{v.GetTimestampField(): definitions.Timestamp}
			if cf := v.GetCreatedTimestampField(); cf != "" {
				types[cf] = definitions.Timestamp
			}
			for _, e := range v.GetEntities() {
				types[e.GetJoinKey()] = featureserver.DefinitionType(e.GetType())
			}
			for _, f := range v.GetFeatures() {
				types[f.GetName()] = featureserver.DefinitionType(f.GetType())
			}
			for _, file := range args[1:] {
				n, err := pushFile(cmd, client, v, types, file, format, batch)
				if err != nil {
					return fmt.Errorf("%s after %d rows: %w", file, n, err)
				}
				fmt.Fprintf(a.out, "%s: %d rows pushed to %s\n", file, n, v.GetName())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	f.StringVar(&format, "format", "", "input format: csv, parquet or arrow (default: from the file extension)")
	f.IntVar(&batch, "batch-rows", 5000, "rows per Push call")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up on a Push call after this long")
	return cmd
}

// pushFile sends one file in batches and returns the rows stored.
func pushFile(cmd *cobra.Command, client featurestorev1connect.FeatureServiceClient, v *featurestorev1.FeatureView, types map[string]definitions.ValueType, file, format string, batch int) (int64, error) {
	f, err := tablefile.DetectFormat(file, format)
	if err != nil {
		return 0, err
	}
	r, err := tablefile.Open(file, f, tablefile.ReadOptions{BatchRows: batch})
	if err != nil {
		return 0, err
	}
	defer r.Close()
	schema := r.Schema()
	for _, field := range schema.Fields() {
		if _, ok := types[field.Name]; !ok {
			return 0, fmt.Errorf("column %q is not a join key, timestamp or feature of view %q", field.Name, v.GetName())
		}
	}
	var stored, row int64
	run := randomID() + "/" + filepath.Base(file)
	if len(run) > 100 {
		run = run[:100]
	}
	batches := 0
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return stored, nil
		}
		if err != nil {
			return stored, err
		}
		req := &featurestorev1.PushRequest{FeatureView: v.GetName()}
		for i := 0; i < int(rec.NumRows()); i++ {
			row++
			pr := &featurestorev1.PushRow{Values: map[string]*featurestorev1.Value{}}
			for c, field := range schema.Fields() {
				val, err := offline.CellValue(rec.Column(c), i, types[field.Name])
				if err != nil {
					rec.Release()
					return stored, fmt.Errorf("row %d, column %q: %v", row, field.Name, err)
				}
				switch {
				case val == nil:
				case field.Name == v.GetTimestampField():
					pr.EventTimestamp = timestamppb.New(val.(time.Time))
				case field.Name == v.GetCreatedTimestampField():
					pr.CreatedTimestamp = timestamppb.New(val.(time.Time))
				default:
					pr.Values[field.Name] = featureserver.ProtoValue(val)
				}
			}
			req.Rows = append(req.Rows, pr)
		}
		rec.Release()
		// Each batch has a key of its own, so retrying one the server
		// could not answer never stores its rows twice.
		req.IdempotencyKey = fmt.Sprintf("%s/%d", run, batches)
		batches++
		resp, err := pushRetrying(cmd.Context(), client, req)
		if err != nil {
			return stored, fmt.Errorf("rows %d to %d: %w", row-int64(len(req.Rows))+1, row, err)
		}
		stored += resp.Msg.GetRowsStored()
	}
}

// pushRetryDelays are the pauses before each retry of a batch the server
// answered Unavailable (ClickHouse restarting, say).
var pushRetryDelays = []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}

// pushRetrying sends a push, again (with the same idempotency key) while
// the server answers Unavailable.
func pushRetrying(ctx context.Context, client featurestorev1connect.FeatureServiceClient, req *featurestorev1.PushRequest) (*connect.Response[featurestorev1.PushResponse], error) {
	resp, err := client.Push(ctx, connect.NewRequest(req))
	for _, d := range pushRetryDelays {
		if connect.CodeOf(err) != connect.CodeUnavailable {
			break
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(d):
		}
		resp, err = client.Push(ctx, connect.NewRequest(req))
	}
	return resp, err
}

// randomID is 16 random hex digits.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
