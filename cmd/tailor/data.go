package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	exportv1 "github.com/tailorhq/tailor/proto/gen/tailor/export/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
	trainingexport "github.com/tailorhq/tailor/training-export"
)

func (a *app) ingestCmd() *cobra.Command {
	var format string
	var opt offline.IngestOptions
	cmd := &cobra.Command{
		Use:   "ingest VIEW FILE...",
		Short: "Load CSV, Parquet or Arrow IPC files into a feature view",
		Long: "ingest loads each FILE into the offline table of VIEW. Columns are matched by name:\n" +
			"the join keys and the event timestamp are required, the created timestamp is optional\n" +
			"(the load time when absent). Timestamps are RFC3339, 'YYYY-MM-DD HH:MM:SS' (UTC) or epoch\n" +
			"seconds; an empty CSV field is null. Each file is all or nothing: a bad cell stops its load,\n" +
			"names the file, row, column and value, and leaves nothing of that file visible.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withApplied(cmd.Context(), func(store *offline.Store, av *offline.AppliedVersion) error {
				return a.ingest(cmd.Context(), store, av, args[0], args[1:], format, opt)
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "input format: csv, parquet or arrow (default: from the file extension)")
	cmd.Flags().BoolVar(&opt.AllowMissingFeatures, "allow-missing-features", false, "store null for features the file has no column for")
	cmd.Flags().BoolVar(&opt.IgnoreExtraColumns, "ignore-extra-columns", false, "skip file columns that are not part of the view")
	cmd.Flags().IntVar(&opt.BatchRows, "batch-rows", 65536, "rows per insert block")
	return cmd
}

func (a *app) ingest(ctx context.Context, store *offline.Store, av *offline.AppliedVersion, view string, files []string, format string, opt offline.IngestOptions) error {
	if _, ok := av.Repo.View(view); !ok {
		return &offline.UnknownViewError{View: view}
	}
	p := newProgress(a.errOut)
	for _, file := range files {
		f, err := tablefile.DetectFormat(file, format)
		if err != nil {
			return err
		}
		r, err := tablefile.Open(file, f, tablefile.ReadOptions{})
		if err != nil {
			return err
		}
		p.reset()
		o := opt
		o.Progress = func(n int64) { p.update("ingest "+file, n) }
		res, err := store.Ingest(ctx, av.Repo, view, file, r, o)
		r.Close()
		p.done()
		if err != nil {
			return err
		}
		fmt.Fprintf(a.out, "%s: %d rows into %s in %s (%.0f rows/s)\n", file, res.Rows, view, res.Duration.Round(1e6), float64(res.Rows)/max(res.Duration.Seconds(), 1e-9))
	}
	return nil
}

func (a *app) exportCmd() *cobra.Command {
	var req trainingexport.Request
	var features, manifest, server, compression string
	cmd := &cobra.Command{
		Use:   "export --entities FILE (--features view:feat,view:* | --service NAME) --out FILE",
		Short: "Export a point-in-time-correct training set",
		Long: "export joins every entity row (join keys + a timestamp + any other columns, carried through)\n" +
			"with the feature values that were current at the row's timestamp: per view, the row with the\n" +
			"greatest event timestamp <= the row's timestamp and >= timestamp - ttl, ties broken by the\n" +
			"created timestamp; none gives null. One output row per entity row, in input order; features\n" +
			"follow the entity columns in the requested order. The join runs inside ClickHouse.\n\n" +
			"Output formats: Parquet (column chunks compressed with --compression: zstd by default,\n" +
			"snappy or none), Arrow IPC (the file format, uncompressed) and CSV (uncompressed); --server\n" +
			"receives an Arrow IPC stream and writes it in the format of --out like any export.\n\n" +
			"Every export is a snapshot: the views are read as of an insertion-time watermark, and a\n" +
			"manifest (OUT.manifest.json, also kept in ClickHouse) records the snapshot id, definitions\n" +
			"version, features with types, entity source, rows, time range and content hash.\n" +
			"`tailor export --manifest M --out FILE` reproduces the same bytes later, whatever rows\n" +
			"arrived since (for entity rows a client uploaded to the ExportService, pass the file again\n" +
			"with --entities; it must have the recorded sha256).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			req.Features = splitList(features)
			if manifest != "" {
				if req.EntitiesSQL != "" || len(req.Features) > 0 || req.Service != "" || server != "" {
					return fmt.Errorf("--manifest reproduces a recorded export: give only --out, and --entities for entity rows a client uploaded (not --entities-sql, --features, --service or --server)")
				}
				if req.Out == "" {
					return fmt.Errorf("no output file: pass --out FILE")
				}
				m, err := trainingexport.LoadManifest(manifest)
				if err != nil {
					return err
				}
				if req.Format != "" && req.Format != m.Format {
					return fmt.Errorf("--format %s: snapshot %s was exported as %s, and reproduces only in that format", req.Format, m.SnapshotID, m.Format)
				}
				if cmd.Flags().Changed("compression") {
					recorded := m.Compression
					if recorded == "" && m.Format == string(tablefile.Parquet) {
						recorded = string(tablefile.Zstd) // manifests before compression was recorded
					}
					if c, err := tablefile.ParseCompression(compression); err != nil || recorded == "" || string(c) != recorded {
						return fmt.Errorf("--compression %s: snapshot %s was exported as %s%s, and reproduces only so (leave --compression out)", compression, m.SnapshotID, m.Format, compressedWith(recorded))
					}
				}
				store, err := a.openStore(ctx)
				if err != nil {
					return err
				}
				defer store.Close()
				p := newProgress(a.errOut)
				res, err := trainingexport.Reproduce(ctx, store, m, req.Out, req.EntitiesFile, p.update)
				p.done()
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "%s: snapshot %s reproduced: %d rows, sha256 %s (as recorded)\n", req.Out, m.SnapshotID, res.Rows, res.Manifest.ContentSHA256)
				return nil
			}
			var err error
			if req.Compression, err = compressionFlag(cmd, compression, req.Out, req.Format); err != nil {
				return err
			}
			if server != "" {
				return a.exportOverServer(cmd.Context(), server, req)
			}
			return a.withApplied(ctx, func(store *offline.Store, av *offline.AppliedVersion) error {
				p := newProgress(a.errOut)
				req.Progress = p.update
				req.DefinitionsVersion = av.Version
				res, err := trainingexport.Export(ctx, store, av.Repo, req)
				p.done()
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "%s: %d rows, %d columns (%s) in %s\n", req.Out, res.Rows, len(res.Columns), strings.Join(res.Columns, ", "), res.Duration.Round(1e6))
				fmt.Fprintf(a.out, "snapshot %s (definitions v%d, as of %s): manifest %s\n", res.Manifest.SnapshotID, av.Version,
					res.Manifest.Watermark.Format(time.RFC3339), trainingexport.ManifestPath(req.Out))
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.EntitiesFile, "entities", "", "entity file (CSV, Parquet or Arrow IPC): join keys, the timestamp column, labels")
	f.StringVar(&req.EntitiesFormat, "entities-format", "", "entity file format (default: from the extension)")
	f.StringVar(&req.EntitiesSQL, "entities-sql", "", "take the entity rows from this ClickHouse query instead of a file")
	f.StringVar(&features, "features", "", "comma-separated feature references: view:feature or view:*")
	f.StringVar(&req.Service, "service", "", "export the features of this feature service")
	f.StringVar(&req.Out, "out", "", "output file")
	f.StringVar(&req.Format, "format", "", "output format: parquet, arrow or csv (default: from --out's extension)")
	compressionFlagVar(cmd, &compression)
	f.BoolVar(&req.FullNames, "full-names", false, "name feature columns view__feature")
	f.StringVar(&req.TimestampColumn, "timestamp-column", offline.DefaultTimestampColumn, "entity timestamp column")
	f.StringVar(&manifest, "manifest", "", "reproduce the export this manifest records (with --out)")
	f.StringVar(&server, "server", "", "export through a tailor server's ExportService (streamed Arrow) instead of ClickHouse directly")
	return cmd
}

// exportOverServer streams the export from a server's ExportService and
// writes it to req.Out in the format asked for, with the server's manifest
// beside it.
func (a *app) exportOverServer(ctx context.Context, server string, req trainingexport.Request) error {
	if req.Out == "" {
		return fmt.Errorf("no output file: pass --out FILE")
	}
	outFormat, wopt, err := trainingexport.OutputOptions(req.Out, req.Format, req.Compression)
	if err != nil {
		return err
	}
	msg := &exportv1.ExportTrainingSetRequest{Features: req.Features, FeatureService: req.Service, FullNames: req.FullNames, TimestampColumn: req.TimestampColumn}
	switch {
	case req.EntitiesSQL != "" && req.EntitiesFile != "":
		return fmt.Errorf("pass either --entities or --entities-sql, not both")
	case req.EntitiesSQL != "":
		msg.Entities = &exportv1.ExportTrainingSetRequest_Sql{Sql: req.EntitiesSQL}
	case req.EntitiesFile != "":
		f, err := tablefile.DetectFormat(req.EntitiesFile, req.EntitiesFormat)
		if err != nil {
			return err
		}
		content, err := os.ReadFile(req.EntitiesFile)
		if err != nil {
			return err
		}
		msg.Entities = &exportv1.ExportTrainingSetRequest_File{File: &exportv1.EntityFile{Content: content, Format: string(f), Name: filepath.Base(req.EntitiesFile)}}
	default:
		return fmt.Errorf("no entity rows: pass --entities FILE or --entities-sql QUERY")
	}
	stream, err := exportv1connect.NewExportServiceClient(http.DefaultClient, server).ExportTrainingSet(ctx, connect.NewRequest(msg))
	if err != nil {
		return fmt.Errorf("%s: %w", server, err)
	}
	defer stream.Close()
	pr, pw := io.Pipe()
	manifest := make(chan string, 1)
	go func() {
		var m string
		for stream.Receive() {
			switch p := stream.Msg().GetPart().(type) {
			case *exportv1.ExportTrainingSetResponse_Arrow:
				if _, err := pw.Write(p.Arrow); err != nil {
					return
				}
			case *exportv1.ExportTrainingSetResponse_ManifestJson:
				m = p.ManifestJson
			}
		}
		switch err := stream.Err(); {
		case err != nil:
			pw.CloseWithError(fmt.Errorf("%s: %w", server, err))
		case m == "":
			pw.CloseWithError(fmt.Errorf("%s: the stream ended without a manifest", server))
		default:
			manifest <- m
			pw.Close()
		}
	}()
	r, err := tablefile.NewReader(pr, tablefile.Arrow, tablefile.ReadOptions{})
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	defer r.Close()
	p := newProgress(a.errOut)
	rows, err := trainingexport.WriteFile(req.Out, outFormat, wopt, r, func(n int64) { p.update("export over "+server, n) })
	p.done()
	if err != nil {
		return err
	}
	m := <-manifest
	if err := os.WriteFile(trainingexport.ManifestPath(req.Out), []byte(m+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "%s: %d rows over %s; manifest %s\n", req.Out, rows, server, trainingexport.ManifestPath(req.Out))
	return nil
}

// compressionFlagVar declares --compression.
func compressionFlagVar(cmd *cobra.Command, value *string) {
	cmd.Flags().StringVar(value, "compression", string(tablefile.Zstd), "Parquet compression: zstd, snappy or none (CSV and Arrow IPC are written uncompressed and refuse it)")
}

// compressionFlag is the --compression value to ask for: empty when the
// flag is not given (the output format's default), else the value,
// checked against the output's format so that a mistake is refused before
// anything runs and named by its flag.
func compressionFlag(cmd *cobra.Command, value, out, format string) (string, error) {
	if !cmd.Flags().Changed("compression") {
		return "", nil
	}
	if out == "" {
		return value, nil
	}
	if _, _, err := trainingexport.OutputOptions(out, format, value); err != nil {
		var ce *tablefile.CompressionError
		if errors.As(err, &ce) {
			return "", fmt.Errorf("--compression: %w", err)
		}
	}
	return value, nil
}

// compressedWith describes a recorded compression for messages.
func compressedWith(c string) string {
	if c == "" {
		return ""
	}
	return " with " + c + " compression"
}
