package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

// TestScoreMatchesOnlinePredict scores customers in batch at an instant
// and asks the online Predict for the same customers at the same
// instant: every probability agrees. Unknown customers score on defaults
// in both.
func TestScoreMatchesOnlinePredict(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": modelDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": predictSpec})
	base, _ := startServe(t, c, "--warm-start=false")
	c.ok("models", "--server", base, "register", testModel(t, "next_product.onnx"), "--spec", filepath.Join(dir, "model.yaml"))
	c.ok("models", "--server", base, "alias", "next_product", "champion", "1")

	exp := readExpected(t, "next_product")
	in := exp.Inputs[0]
	ctx := context.Background()
	push := &featurestorev1.PushRequest{FeatureView: "cust"}
	var entities strings.Builder
	entities.WriteString("customer_id,segment_label\n")
	var instances []*servingv1.Instance
	for r := range in.Shape[0] {
		id := fmt.Sprintf("c%d", r)
		vals := map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: id}}}
		for f := range 10 {
			vals[fmt.Sprintf("f%d", f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: float32(in.Data[r*12+f])}}
		}
		push.Rows = append(push.Rows, &featurestorev1.PushRow{Values: vals, EventTimestamp: timestamppb.New(time.Now().Add(-time.Hour))})
		fmt.Fprintf(&entities, "%s,x%d\n", id, r)
		instances = append(instances, &servingv1.Instance{Entities: map[string]*featurestorev1.Value{"customer_id": vals["customer_id"]}})
	}
	entities.WriteString("stranger,y\n")
	instances = append(instances, &servingv1.Instance{Entities: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "stranger"}}}})
	if _, err := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base).Push(ctx, connect.NewRequest(push)); err != nil {
		t.Fatal(err)
	}
	ents := filepath.Join(dir, "entities.csv")
	writeFile(t, ents, entities.String())
	at := time.Now().UTC().Truncate(time.Second)
	out := filepath.Join(dir, "scores.csv")
	mustContain(t, c.ok("score", "--model", "next_product@champion", "--entities", ents, "--at", at.Format(time.RFC3339), "--out", out),
		fmt.Sprintf("%d entities scored by next_product:1", len(instances)))

	resp, err := servingv1connect.NewPredictionServiceClient(h2cClient(), base).Predict(ctx, connect.NewRequest(&servingv1.PredictRequest{
		Model: "next_product@champion", Instances: instances, RequestTime: timestamppb.New(at),
	}))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, out)), "\n")
	header := strings.Split(lines[0], ",")
	if strings.Join(header[:5], ",") != "customer_id,segment_label,model,model_version,snapshot_id" || header[5] != "probabilities__p1" || len(header) != 13 {
		t.Fatalf("header %v", header)
	}
	if len(lines)-1 != len(instances) {
		t.Fatalf("%d scored rows, want %d", len(lines)-1, len(instances))
	}
	for r, line := range lines[1:] {
		cells := strings.Split(line, ",")
		if cells[0] != instances[r].GetEntities()["customer_id"].GetStringValue() || cells[2] != "next_product" || cells[3] != "1" || !strings.HasPrefix(cells[4], "snap-") {
			t.Fatalf("row %d: %v", r, cells)
		}
		for k, v := range resp.Msg.GetPredictions()[r].GetOutputs()[0].GetValues() {
			got, err := strconv.ParseFloat(cells[5+k], 64)
			if err != nil || math.Abs(got-v) > 1e-6 {
				t.Errorf("customer %s p%d: batch %s, online %v", cells[0], k+1, cells[5+k], v)
			}
		}
	}
	// To a ClickHouse table: the same scores; a second run replaces them.
	for range 2 {
		mustContain(t, c.ok("score", "--model", "next_product@champion", "--entities", ents, "--at", at.Format(time.RFC3339), "--table", "scores"), "table scores: 6 entities")
	}
	got := strings.TrimSpace(c.sql("SELECT customer_id, model, model_version, probabilities__p1 FROM " + c.db + ".scores ORDER BY customer_id"))
	// Each run is recorded: the table's snapshot id names its record.
	if n := strings.TrimSpace(c.sql("SELECT count() FROM " + c.db + ".snapshots WHERE snapshot_id IN (SELECT snapshot_id FROM " + c.db + ".scores) AND position(manifest, 'next_product:1') > 0")); n != "1" {
		t.Fatalf("the scores' snapshot id is recorded %s times", n)
	}
	if lines := strings.Split(got, "\n"); len(lines) != len(instances) || !strings.HasPrefix(lines[0], "c0\tnext_product\t1\t") {
		t.Fatalf("scores table:\n%s", got)
	}
	if n := strings.TrimSpace(c.sql("SELECT count() FROM system.tables WHERE database = '" + c.db + "' AND name LIKE '_stage_scores_%'")); n != "0" {
		t.Fatalf("%s staging tables left behind", n)
	}
	// A failing run (here an unknown model) leaves the table as it was.
	c.fails("score", "--model", "nope", "--entities", ents, "--at", at.Format(time.RFC3339), "--table", "scores")
	if after := strings.TrimSpace(c.sql("SELECT customer_id, model, model_version, probabilities__p1 FROM " + c.db + ".scores ORDER BY customer_id")); after != got {
		t.Fatalf("a failed run changed the table")
	}

	// Bad requests name the problem.
	mustContain(t, c.fails("score", "--model", "nope", "--entities", ents, "--at", "2025-01-01", "--out", out), `"nope"`)
	mustContain(t, c.fails("score", "--model", "next_product", "--entities", ents, "--at", "later", "--out", out), "--at")
	bad := filepath.Join(dir, "bad.csv")
	writeFile(t, bad, "client,x\nc1,1\n")
	mustContain(t, c.fails("score", "--model", "next_product", "--entities", bad, "--at", "2025-01-01", "--out", out), "customer_id")
}
