package trainset

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/training-export/onnxwrite"
	"github.com/tailorhq/tailor/training-export/train"
)

// Task says what a model predicts and how its labels are read.
type Task string

// The tasks of the hyper-personalization loop.
const (
	// NextProduct predicts the product of the next order; labels are
	// product ids.
	NextProduct Task = "next-product"
	// Timing predicts how long until the next order; labels are days (a
	// number), bucketed by FitOptions.Buckets.
	Timing Task = "timing"
	// Channel predicts the channel a customer opens; labels are channels.
	Channel Task = "channel"
)

// registryTask is the task's name in model.yaml.
func (t Task) registryTask() string {
	switch t {
	case NextProduct:
		return registry.TaskNextProduct
	case Timing:
		return registry.TaskTiming
	case Channel:
		return registry.TaskChannel
	}
	return registry.TaskGeneric
}

// FitOptions configures Fit.
type FitOptions struct {
	Task Task
	// Name is the model's name in the registry.
	Name string
	// Buckets are the timing task's upper bounds (e.g. 1d, 3d, 7d): a
	// label of d days falls in the first bucket d fits, or the last.
	Buckets []time.Duration
	// Valid and Test are the fractions of the latest rows held out (by
	// time) for early stopping and for the reported metrics.
	Valid, Test float64
	// Train configures the trainer (Classes is set by Fit).
	Train train.Options
	// K is the k of hit@k (default 5).
	K int
}

// Result is a trained model, ready to register.
type Result struct {
	ONNX []byte
	// SpecYAML is the model.yaml: inputs from the set's features, the
	// classes as output labels, the metrics and the lineage.
	SpecYAML []byte
	Classes  []string
	// Metrics are measured on the test rows, with the popularity
	// baseline's beside them (popularity_*).
	Metrics map[string]float64
	Report  *train.Report
	// Rows in the training, validation and test sets.
	TrainRows, ValidRows, TestRows int
}

// Fit trains a model for opt.Task on the set with a time-based holdout,
// measures it against the popularity baseline on the latest rows, and
// writes it as ONNX with its model.yaml.
func Fit(ctx context.Context, s *Set, opt FitOptions) (*Result, error) {
	if opt.K == 0 {
		opt.K = 5
	}
	if opt.Test <= 0 || opt.Test >= 1 || opt.Valid < 0 || opt.Valid >= 1 {
		return nil, fmt.Errorf("holdout fractions must be in (0, 1): test %g, valid %g", opt.Test, opt.Valid)
	}
	labels, classes, err := s.classes(opt)
	if err != nil {
		return nil, err
	}
	trainRows, validRows, testRows := s.SplitByTime(opt.Valid, opt.Test)
	keep := func(rows []int) []int {
		var out []int
		for _, r := range rows {
			if labels[r] >= 0 {
				out = append(out, r)
			}
		}
		return out
	}
	trainRows, validRows, testRows = keep(trainRows), keep(validRows), keep(testRows)
	if len(trainRows) == 0 || len(testRows) == 0 {
		return nil, fmt.Errorf("%d labelled rows: too few to hold out the latest %.0f%%", len(trainRows)+len(validRows)+len(testRows), 100*opt.Test)
	}
	dataset := func(rows []int) *train.Dataset {
		d := &train.Dataset{X: s.Matrix(rows), Features: s.Width()}
		for _, r := range rows {
			d.Y = append(d.Y, labels[r])
		}
		return d
	}
	trainSet, testSet := dataset(trainRows), dataset(testRows)
	var validSet *train.Dataset
	if len(validRows) > 0 {
		validSet = dataset(validRows)
	}
	topt := opt.Train
	topt.Classes = len(classes)
	model, report, err := train.Train(ctx, trainSet, validSet, topt)
	if err != nil {
		return nil, err
	}
	pop, err := train.Popularity(trainSet, len(classes))
	if err != nil {
		return nil, err
	}
	metrics := map[string]float64{}
	measure := func(prefix string, m *train.Model) {
		p := m.Predict(testSet.X, testSet.Rows())
		metrics[prefix+"accuracy"] = train.Accuracy(p, testSet.Y, len(classes))
		metrics[prefix+"log_loss"] = train.LogLoss(p, testSet.Y, len(classes))
		if len(classes) > opt.K {
			metrics[fmt.Sprintf("%shit_at_%d", prefix, opt.K)] = train.HitAtK(p, testSet.Y, len(classes), opt.K)
			metrics[prefix+"mrr"] = train.MRR(p, testSet.Y, len(classes))
		}
		if opt.Task == Timing {
			metrics[prefix+"mae_days"] = timingMAE(p, testRows, s.Labels, opt.Buckets)
		}
	}
	measure("", model)
	measure("popularity_", pop)

	layers := make([]onnxwrite.Dense, len(model.Layers))
	for i, l := range model.Layers {
		layers[i] = onnxwrite.Dense{In: l.In, Out: l.Out, W: l.W, B: l.B, ReLU: l.ReLU}
	}
	onnx, err := onnxwrite.Classifier(onnxwrite.ClassifierSpec{
		Input: "features", Output: "probabilities", Layers: layers, Doc: fmt.Sprintf("tailor train %s", opt.Task),
		Metadata: map[string]string{"task": string(opt.Task), "snapshot": s.Manifest.SnapshotID},
	})
	if err != nil {
		return nil, err
	}
	spec, err := s.specYAML(opt, classes, metrics)
	if err != nil {
		return nil, err
	}
	return &Result{ONNX: onnx, SpecYAML: spec, Classes: classes, Metrics: metrics, Report: report,
		TrainRows: len(trainRows), ValidRows: len(validRows), TestRows: len(testRows)}, nil
}

// classes reads every row's class index (-1: no label) and the classes'
// names: by frequency in the set for products and channels, the buckets
// for timing.
func (s *Set) classes(opt FitOptions) ([]int, []string, error) {
	labels := make([]int, s.Rows())
	if opt.Task == Timing {
		if len(opt.Buckets) < 2 {
			return nil, nil, fmt.Errorf("timing needs at least two buckets")
		}
		names := make([]string, len(opt.Buckets))
		for i, b := range opt.Buckets {
			names[i] = formatDays(b)
		}
		for i, l := range s.Labels {
			days, ok := numericLabel(l)
			if !ok {
				labels[i] = -1
				continue
			}
			labels[i] = bucketOf(days, opt.Buckets)
		}
		return labels, names, nil
	}
	counts := map[string]int{}
	for _, l := range s.Labels {
		if l != "" {
			counts[l]++
		}
	}
	if len(counts) < 2 {
		return nil, nil, fmt.Errorf("the label column has %d distinct values: nothing to learn", len(counts))
	}
	var names []string
	for l := range counts {
		names = append(names, l)
	}
	sort.Slice(names, func(a, b int) bool {
		if counts[names[a]] != counts[names[b]] {
			return counts[names[a]] > counts[names[b]]
		}
		return names[a] < names[b]
	})
	index := map[string]int{}
	for i, n := range names {
		index[n] = i
	}
	for i, l := range s.Labels {
		if k, ok := index[l]; ok {
			labels[i] = k
		} else {
			labels[i] = -1
		}
	}
	return labels, names, nil
}

// bucketOf is the first bucket whose bound holds days, or the last.
func bucketOf(days float64, buckets []time.Duration) int {
	for i, b := range buckets {
		if days*24*float64(time.Hour) <= float64(b) {
			return i
		}
	}
	return len(buckets) - 1
}

// formatDays names a bucket bound as the registry reads it: whole days as
// "Nd", anything else as a Go duration.
func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}

// timingMAE is the mean absolute error in days between the expected
// bucket (each bucket at the middle of its range) and the true days.
func timingMAE(probs []float32, rows []int, labels []string, buckets []time.Duration) float64 {
	mid := make([]float64, len(buckets))
	lo := 0.0
	for i, b := range buckets {
		hi := b.Hours() / 24
		mid[i] = (lo + hi) / 2
		lo = hi
	}
	sum, n := 0.0, 0
	k := len(buckets)
	for r, row := range rows {
		days, ok := numericLabel(labels[row])
		if !ok {
			continue
		}
		exp := 0.0
		for c := range k {
			exp += float64(probs[r*k+c]) * mid[c]
		}
		sum += math.Abs(exp - days)
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// specYAML writes the model.yaml of a model trained on s.
func (s *Set) specYAML(opt FitOptions, classes []string, metrics map[string]float64) ([]byte, error) {
	type element struct {
		Feature          string   `yaml:"feature"`
		Encoding         string   `yaml:"encoding,omitempty"`
		Vocabulary       []string `yaml:"vocabulary,omitempty,flow"`
		MissingIndicator bool     `yaml:"missing_indicator,omitempty"`
	}
	type input struct {
		Name     string    `yaml:"name"`
		Elements []element `yaml:"elements"`
	}
	type output struct {
		Name   string   `yaml:"name"`
		Labels []string `yaml:"labels,flow"`
	}
	doc := struct {
		Name        string             `yaml:"name"`
		Task        string             `yaml:"task"`
		Description string             `yaml:"description"`
		Inputs      []input            `yaml:"inputs"`
		Outputs     []output           `yaml:"outputs"`
		Metrics     map[string]float64 `yaml:"metrics"`
		Tags        map[string]string  `yaml:"tags"`
		Lineage     map[string]string  `yaml:"lineage"`
	}{
		Name: opt.Name, Task: opt.Task.registryTask(),
		Description: fmt.Sprintf("%s trained by tailor train on %s (%d rows)", opt.Task, s.Manifest.SnapshotID, s.Rows()),
		Outputs:     []output{{Name: "probabilities", Labels: classes}},
		Metrics:     map[string]float64{},
		Tags:        map[string]string{"trainer": "tailor", "model": modelKind(opt.Train.Hidden)},
		Lineage:     map[string]string{"snapshot": s.Manifest.SnapshotID},
	}
	for k, v := range metrics {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			doc.Metrics[k] = math.Round(v*1e6) / 1e6
		}
	}
	in := input{Name: "features"}
	for _, f := range s.Features {
		e := element{Feature: f.Ref}
		if f.Vocabulary != nil {
			e.Encoding, e.Vocabulary = "one_hot", f.Vocabulary
		}
		e.MissingIndicator = f.Missing
		in.Elements = append(in.Elements, e)
	}
	doc.Inputs = []input{in}
	return yaml.Marshal(doc)
}

func modelKind(hidden []int) string {
	if len(hidden) == 0 {
		return "logistic_regression"
	}
	parts := make([]string, len(hidden))
	for i, h := range hidden {
		parts[i] = strconv.Itoa(h)
	}
	return "mlp_" + strings.Join(parts, "x")
}
