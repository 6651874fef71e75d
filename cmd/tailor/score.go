package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/nba"
	trainingexport "github.com/tailorhq/tailor/training-export"
)

func (a *app) scoreCmd() *cobra.Command {
	var req trainingexport.ScoreRequest
	var at, nbaFile, compression string
	var nextBest bool
	var k int
	cmd := &cobra.Command{
		Use:   "score --model NAME@alias (--entities FILE | --entities-sql SQL) --at TIME (--out FILE | --table NAME)",
		Short: "Score a whole population with a registered model at one instant",
		Long: "score reads every entity's point-in-time features at --at (as of a snapshot watermark), runs\n" +
			"the model on ONNX Runtime batch by batch, and writes the entity columns, the model and version,\n" +
			"and one column per output value (output__label) to --out (Parquet, CSV or Arrow IPC; Parquet is\n" +
			"compressed with --compression, zstd by default).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			t, err := tablefile.ParseTimestamp(at)
			if err != nil {
				return fmt.Errorf("--at: %w", err)
			}
			req.At = t
			if req.Table != "" && cmd.Flags().Changed("compression") {
				return fmt.Errorf("--compression applies to Parquet files (--out), not to --table")
			}
			if req.Compression, err = compressionFlag(cmd, compression, req.Out, req.Format); err != nil {
				return err
			}
			return a.withApplied(ctx, func(store *offline.Store, av *offline.AppliedVersion) error {
				reg, err := registry.New(ctx, store.Conn(), store.Database(), registry.InspectONNX, a.log)
				if err != nil {
					return err
				}
				if nextBest {
					if nbaFile == "" || req.Out == "" {
						return fmt.Errorf("--next-best-action needs --nba FILE (the serving configuration) and --out FILE")
					}
					cfg, err := nba.LoadConfig(nbaFile)
					if err != nil {
						return err
					}
					if err := cfg.Check(av.Repo); err != nil {
						return fmt.Errorf("%s: %w", nbaFile, err)
					}
					p := newProgress(a.errOut)
					res, err := trainingexport.ScoreNextBestAction(ctx, store, reg, av.Repo, trainingexport.NBARequest{
						Config: cfg, K: k, EntitiesFile: req.EntitiesFile, EntitiesFormat: req.EntitiesFormat, EntitiesSQL: req.EntitiesSQL,
						At: req.At, Out: req.Out, Format: req.Format, Compression: req.Compression, Progress: p.update,
					})
					p.done()
					if err != nil {
						return err
					}
					fmt.Fprintf(a.out, "%s: next best action for %d entities at %s (features as of %s) in %s\n",
						req.Out, res.Rows, req.At.Format(time.RFC3339), res.Watermark.Format(time.RFC3339), res.Duration.Round(time.Millisecond))
					return nil
				}
				p := newProgress(a.errOut)
				req.Progress = p.update
				req.DefinitionsVersion = av.Version
				res, err := trainingexport.Score(ctx, store, reg, av.Repo, req)
				p.done()
				if err != nil {
					return err
				}
				dest := req.Out
				if dest == "" {
					dest = "table " + req.Table
				}
				fmt.Fprintf(a.out, "%s: %d entities scored by %s:%d at %s (features as of %s) in %s (%.0f rows/s); snapshot %s\n",
					dest, res.Rows, res.Model, res.Version, req.At.Format(time.RFC3339), res.Watermark.Format(time.RFC3339),
					res.Duration.Round(time.Millisecond), float64(res.Rows)/max(res.Duration.Seconds(), 1e-9), res.SnapshotID)
				fmt.Fprintf(a.out, "time: %s\n", res.Stages)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Model, "model", "", "model: name, name@alias or name:version")
	f.StringVar(&req.EntitiesFile, "entities", "", "entity file (CSV, Parquet or Arrow IPC) of join keys and any carried columns")
	f.StringVar(&req.EntitiesFormat, "entities-format", "", "entity file format (default: from the extension)")
	f.StringVar(&req.EntitiesSQL, "entities-sql", "", "take the entity rows from this ClickHouse query instead of a file")
	f.StringVar(&at, "at", "", "the instant to score at: RFC 3339, YYYY-MM-DD or Unix seconds")
	f.StringVar(&req.Out, "out", "", "output file")
	f.StringVar(&req.Table, "table", "", "write to this ClickHouse table instead (name or db.name), replaced atomically when complete")
	f.BoolVar(&nextBest, "next-best-action", false, "answer the full next best action per entity (products, send time, channel) as the online NextBestAction would")
	f.StringVar(&nbaFile, "nba", "", "with --next-best-action: the next-best-action configuration (as for tailor serve --nba)")
	f.IntVar(&k, "k", 5, "with --next-best-action: products per entity")
	f.StringVar(&req.Format, "format", "", "output format: parquet, arrow or csv (default: from --out's extension)")
	compressionFlagVar(cmd, &compression)
	return cmd
}
