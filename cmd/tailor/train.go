package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/proto/gen/tailor/registry/v1/registryv1connect"
	"github.com/tailorhq/tailor/registry"
	trainingexport "github.com/tailorhq/tailor/training-export"
	"github.com/tailorhq/tailor/training-export/train"
	"github.com/tailorhq/tailor/training-export/trainset"
)

func (a *app) trainCmd() *cobra.Command {
	var export, manifest, service, label, tsCol, name, hidden, buckets, out, server, actor string
	var opt trainset.FitOptions
	var vocab int
	cmd := &cobra.Command{
		Use:   "train next-product|timing|channel --export TRAIN.parquet [--server URL | --out DIR]",
		Short: "Train a baseline model on an exported training set and register it",
		Long: "train reads a training set written by `tailor export` (its manifest names the features and\n" +
			"the snapshot), holds out the latest rows by time (--valid for early stopping, --test for the\n" +
			"metrics), trains a multinomial logistic regression (or an MLP with --hidden 64[,32]) in Go,\n" +
			"measures it against the popularity baseline (accuracy, log loss, hit@5 and MRR; timing: mean\n" +
			"absolute error in days), writes it as ONNX with its model.yaml (inputs assembled from the\n" +
			"features exactly as in training, lineage = the snapshot) and registers it with --server.\n\n" +
			"Labels: next-product and channel take the label column's values as classes; timing takes a\n" +
			"number of days, bucketed by --buckets.",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(trainset.NextProduct), string(trainset.Timing), string(trainset.Channel)},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			opt.Task = trainset.Task(args[0])
			switch opt.Task {
			case trainset.NextProduct, trainset.Timing, trainset.Channel:
			default:
				return fmt.Errorf("unknown task %q: next-product, timing or channel", args[0])
			}
			if export == "" {
				return fmt.Errorf("no training set: pass --export FILE (written by tailor export)")
			}
			if server == "" && out == "" {
				return fmt.Errorf("pass --server URL to register the model, or --out DIR to write it")
			}
			if manifest == "" {
				manifest = trainingexport.ManifestPath(export)
			}
			m, err := trainingexport.LoadManifest(manifest)
			if err != nil {
				return err
			}
			if service != "" && m.Service != service {
				// Train on the service's features, which the export must
				// hold (it may hold more).
				if err := a.withApplied(ctx, func(_ *offline.Store, av *offline.AppliedVersion) error {
					var err error
					m, err = serviceColumns(m, av.Repo, service, export)
					return err
				}); err != nil {
					return err
				}
			}
			if name == "" {
				name = strings.ReplaceAll(string(opt.Task), "-", "_")
			}
			opt.Name = name
			if opt.Train.Hidden, err = intList("--hidden", hidden); err != nil {
				return err
			}
			if opt.Task == trainset.Timing {
				for _, b := range splitList(buckets) {
					d, err := registry.ParseDuration(b)
					if err != nil || d <= 0 {
						return fmt.Errorf("--buckets: %q is not a duration", b)
					}
					opt.Buckets = append(opt.Buckets, d)
				}
				if !sort.SliceIsSorted(opt.Buckets, func(i, j int) bool { return opt.Buckets[i] < opt.Buckets[j] }) {
					return fmt.Errorf("--buckets must increase")
				}
			}
			start := time.Now()
			set, err := trainset.Read(export, m, label, tsCol, vocab)
			if err != nil {
				return err
			}
			p := newProgress(a.errOut)
			opt.Train.OnEpoch = func(e train.Epoch) {
				p.update(fmt.Sprintf("train %s, epoch %d, validation loss %.4f", name, e.Epoch, e.ValidLoss), int64(set.Rows()))
			}
			res, err := trainset.Fit(ctx, set, opt)
			p.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "%s: %s on %d rows (%d train, %d validation, %d test, by time), %d inputs, %d classes, %d epochs (best %d) in %s\n",
				name, opt.Task, set.Rows(), res.TrainRows, res.ValidRows, res.TestRows, set.Width(), len(res.Classes), len(res.Report.Epochs), res.Report.BestEpoch,
				time.Since(start).Round(time.Millisecond))
			if len(set.Skipped) > 0 {
				fmt.Fprintf(a.out, "not used (timestamps, arrays, always null): %s\n", strings.Join(set.Skipped, ", "))
			}
			printMetrics(a, res.Metrics)
			if out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(out, name+".onnx"), res.ONNX, 0o644); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(out, name+".yaml"), res.SpecYAML, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "wrote %s and %s\n", filepath.Join(out, name+".onnx"), filepath.Join(out, name+".yaml"))
			}
			if server != "" {
				client := registryv1connect.NewRegistryServiceClient(http.DefaultClient, server)
				return a.registerModel(ctx, client, server, actor, name+".onnx", name+".yaml", res.SpecYAML, bytes.NewReader(res.ONNX))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&export, "export", "", "the training set: a file written by tailor export")
	f.StringVar(&manifest, "manifest", "", "its manifest (default: FILE.manifest.json)")
	f.StringVar(&service, "service", "", "train on this feature service's features (the export must hold them; default: every feature it holds)")
	f.StringVar(&label, "label", "label", "the label column")
	f.StringVar(&tsCol, "timestamp-column", "event_timestamp", "the entity timestamp column (the holdout is by time)")
	f.StringVar(&name, "name", "", "the model's name in the registry (default: the task, next_product, timing or channel)")
	f.StringVar(&hidden, "hidden", "", "hidden layer sizes of an MLP, e.g. 64 or 128,64 (default: logistic regression)")
	f.IntVar(&opt.Train.Epochs, "epochs", 30, "most passes over the training rows (early stopping may end sooner)")
	f.Float64Var(&opt.Train.LearningRate, "learning-rate", 0.003, "Adam's learning rate")
	f.Float64Var(&opt.Train.L2, "l2", 1e-5, "L2 regularisation")
	f.Uint64Var(&opt.Train.Seed, "seed", 1, "random seed (training is deterministic for a seed)")
	f.StringVar(&buckets, "buckets", "1d,3d,7d,14d,30d,60d", "timing: the buckets' upper bounds")
	f.Float64Var(&opt.Test, "test", 0.2, "fraction of the latest rows held out for the metrics")
	f.Float64Var(&opt.Valid, "valid", 0.1, "fraction of the remaining latest rows held out for early stopping")
	f.IntVar(&vocab, "vocab", 256, "most values one-hot encoded per text feature")
	f.StringVar(&out, "out", "", "also write NAME.onnx and NAME.yaml into this directory")
	f.StringVar(&server, "server", "", "register the model with this tailor server")
	f.StringVar(&actor, "actor", defaultActor(), "who registers, for the audit trail")
	return cmd
}

// serviceColumns narrows a manifest's features to those of a feature
// service; every one of them must be in the export.
func serviceColumns(m *trainingexport.Manifest, repo *definitions.Repo, service, export string) (*trainingexport.Manifest, error) {
	refs, err := repo.ResolveService(service)
	if err != nil {
		return nil, err
	}
	have := map[string]trainingexport.ManifestColumn{}
	for _, c := range m.Features {
		have[c.Ref] = c
	}
	narrowed := *m
	narrowed.Features = nil
	var missing []string
	for _, r := range refs {
		c, ok := have[r.String()]
		if !ok {
			missing = append(missing, r.String())
			continue
		}
		narrowed.Features = append(narrowed.Features, c)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks feature(s) %s of feature service %q (it was exported with %s)", export, strings.Join(missing, ", "), service, exportedWith(m))
	}
	return &narrowed, nil
}

func exportedWith(m *trainingexport.Manifest) string {
	if m.Service != "" {
		return fmt.Sprintf("feature service %q", m.Service)
	}
	return fmt.Sprintf("%d features", len(m.Features))
}

// intList parses "64,32".
func intList(flag, s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive size", flag, p)
		}
		out = append(out, n)
	}
	return out, nil
}

// printMetrics lists the model's metrics beside the popularity baseline's.
func printMetrics(a *app, metrics map[string]float64) {
	var names []string
	for k := range metrics {
		if !strings.HasPrefix(k, "popularity_") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(a.out, "%-12s %10s %12s\n", "test metric", "model", "popularity")
	for _, k := range names {
		fmt.Fprintf(a.out, "%-12s %10.4f %12.4f\n", k, metrics[k], metrics["popularity_"+k])
	}
}
