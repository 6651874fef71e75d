package predictserver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/serving/predictserver"
)

// oneModel is a registry holding next_product.onnx as m:1.
type oneModel struct {
	v     *registry.Version
	bytes []byte
}

func (o *oneModel) Resolve(context.Context, string) (*registry.Version, error) { return o.v, nil }
func (o *oneModel) Artifact(context.Context, *registry.Version) ([]byte, error) {
	return o.bytes, nil
}

// memFeatures answers every feature of every row from memory: the
// benchmark measures what Predict adds around the model run, the feature
// fetch being the online store's own benchmark.
type memFeatures struct{ row *onlinestore.Result }

func (m memFeatures) Get(_ context.Context, _ *definitions.Repo, refs []definitions.FeatureRef, rows onlinestore.EntityRows) ([][]onlinestore.Result, error) {
	out := make([][]onlinestore.Result, rows.Len())
	for i := range out {
		out[i] = make([]onlinestore.Result, len(refs))
	}
	return out, nil
}

// BenchmarkPredictOverhead runs the Predict handler in process (no
// network, features from memory) against the floor of a bare ONNX
// Runtime Run of the same model and batch, in the same run. Issue 5's
// target: at most 1.3x the bare run, plus the feature fetch.
func BenchmarkPredictOverhead(b *testing.B) {
	if err := onnxrt.Init(""); err != nil {
		b.Skip(err)
	}
	model, err := os.ReadFile(filepath.Join("..", "testdata", "models", "next_product.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	elems := make([]string, 12)
	for i := range elems {
		elems[i] = fmt.Sprintf("{request: r%d}", i)
	}
	spec, err := registry.ParseSpec("m.yaml", []byte(fmt.Sprintf("name: m\ninputs:\n  - name: features\n    elements: [%s]\noutputs:\n  - name: probabilities\n    labels: [p1, p2, p3, p4, p5, p6, p7, p8]\n", strings.Join(elems, ", "))))
	if err != nil {
		b.Fatal(err)
	}
	reg := &oneModel{v: &registry.Version{Name: "m", Version: 1, Spec: spec}, bytes: model}
	repo := &definitions.Repo{}
	mgr := models.New(reg, func() *definitions.Repo { return repo }, models.Options{Session: onnxrt.SessionOptions{IntraOpThreads: 1}, Refresh: time.Hour})
	defer mgr.Close()
	srv := predictserver.New(mgr, nil, nil, memFeatures{}, func() *definitions.Repo { return repo }, nil)
	bare, err := onnxrt.NewSession(model, onnxrt.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	ctx := context.Background()
	for _, rows := range []int{1, 64} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			req := &servingv1.PredictRequest{Model: "m:1"}
			input := onnxrt.Tensor{Name: "features", Shape: []int64{int64(rows), 12}, Float32: make([]float32, rows*12)}
			for r := range rows {
				v := map[string]float64{}
				for i := range 12 {
					v[fmt.Sprintf("r%d", i)] = float64(r+i) / 10
					input.Float32[r*12+i] = float32(r+i) / 10
				}
				req.Instances = append(req.Instances, &servingv1.Instance{
					Entities: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: fmt.Sprint(r)}}},
					Values:   v,
				})
			}
			if _, err := srv.Predict(ctx, connect.NewRequest(req)); err != nil {
				b.Fatal(err)
			}
			var floor, predict time.Duration
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if _, err := bare.Run(ctx, []onnxrt.Tensor{input}); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := srv.Predict(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
				floor, predict = floor+t1.Sub(t0), predict+time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(predict.Nanoseconds())/n, "predict-ns/op")
			b.ReportMetric(float64(floor.Nanoseconds())/n, "bare-run-ns/op")
			b.ReportMetric(float64(predict)/float64(floor), "ratio-vs-bare-run")
			ratio := float64(predict) / float64(floor)
			_ = benchrec.Record(benchrec.Result{Area: "models", Benchmark: "serving/predictserver " + b.Name(),
				Measure: fmt.Sprintf("Predict handler in process, %d instance(s), features from memory", rows),
				Value:   fmt.Sprintf("%.1f µs", float64(predict.Nanoseconds())/n/1e3),
				Floor:   fmt.Sprintf("bare ONNX Runtime run of the same model and batch: %.1f µs", float64(floor.Nanoseconds())/n/1e3),
				Ratio:   fmt.Sprintf("%.2fx", ratio), Target: "<= 1.3x", Met: benchrec.Met(ratio <= 1.3)})
		})
	}
}
