package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// modelDefs has twelve numeric customer features, the inputs of the test
// models under serving/testdata/models.
const modelDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: f0, type: float32}
      - {name: f1, type: float32}
      - {name: f2, type: float32}
      - {name: f3, type: float32}
      - {name: f4, type: float32}
      - {name: f5, type: float32}
      - {name: f6, type: float32}
      - {name: f7, type: float32}
      - {name: f8, type: float32}
      - {name: f9, type: float32}
      - {name: segment, type: string}
`

// nextProductSpec feeds next_product.onnx: ten features, hour and day.
const nextProductSpec = `name: next_product
task: next_product
description: which product next
inputs:
  - name: features
    elements:
      - {feature: "cust:f0"}
      - {feature: "cust:f1"}
      - {feature: "cust:f2"}
      - {feature: "cust:f3"}
      - {feature: "cust:f4"}
      - {feature: "cust:f5"}
      - {feature: "cust:f6"}
      - {feature: "cust:f7"}
      - {feature: "cust:f8"}
      - {feature: "cust:f9"}
      - {context: hour_of_day}
      - {context: day_of_week}
outputs:
  - name: probabilities
    labels: [p1, p2, p3, p4, p5, p6, p7, p8]
metrics: {hit_at_5: 0.42}
lineage: {snapshot: snap-123}
`

// testModel is the path of a committed test model.
func testModel(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "serving", "testdata", "models", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestModelsRegistry registers real ONNX models through a running server:
// versions, content addressing, aliases with their audit trail, archival,
// and every kind of bad model refused with an error that names the
// problem.
func TestModelsRegistry(t *testing.T) {
	c := newCLI(t)
	dir := writeFiles(t, map[string]string{"defs.yaml": modelDefs})
	c.ok("apply", dir)
	base, _ := startServe(t, c, "--warm-start=false")
	spec := filepath.Join(dir, "model.yaml")
	writeFile(t, spec, nextProductSpec)
	models := func(args ...string) string {
		return c.ok(append([]string{"models", "--server", base, "--actor", "ana"}, args...)...)
	}
	// The lineage names a recorded export snapshot.
	c.exec("INSERT INTO " + c.db + ".snapshots (snapshot_id, manifest) SELECT 'snap-123', '{}'")
	np := testModel(t, "next_product.onnx")
	mustContain(t, models("register", np, "--spec", spec), "registered next_product version 1 (next_product")
	mustContain(t, models("register", np, "--spec", spec), "already registered as next_product version 1")
	// New metadata over the same bytes is a new version.
	writeFile(t, spec, strings.Replace(nextProductSpec, "which product next", "which product next, v2", 1))
	mustContain(t, models("register", np, "--spec", spec), "registered next_product version 2")

	mustContain(t, models("alias", "next_product", "champion", "1", "--reason", "first"), "next_product@champion: version 1")
	mustContain(t, models("alias", "next_product", "champion", "2"), "next_product@champion: version 1 -> 2")
	mustContain(t, c.fails("models", "--server", base, "archive", "next_product", "2"), "champion", "move the alias")
	mustContain(t, models("archive", "next_product", "1", "--reason", "superseded"), "next_product version 1 archived")
	mustContain(t, c.fails("models", "--server", base, "alias", "next_product", "challenger", "1"), "archived", "invalid_argument")
	mustContain(t, c.fails("models", "--server", base, "alias", "next_product", "champion", "9"), "version 9", "not_found")

	mustContain(t, models("list"), "next_product", "champion")
	desc := models("describe", "next_product")
	mustContain(t, desc,
		"aliases: champion -> 2",
		"version 1 [archived]",
		"version 2 @champion",
		"input features float32 [-1 12]: cust:f0, cust:f1",
		"context:hour_of_day, context:day_of_week",
		"output probabilities: labels p1, p2",
		"hit_at_5=0.42", "snapshot=snap-123",
		"alias    ana version 1 as champion (was 0): first",
		"alias    ana version 2 as champion (was 1)",
		"archive  ana version 1: superseded",
	)

	writeFile(t, spec, nextProductSpec)
	for _, tc := range []struct {
		name, model, spec string
		want              []string
	}{
		{"not onnx", "not_onnx.onnx", nextProductSpec, []string{"invalid_argument", "ONNX Runtime cannot load the model"}},
		{"fixed batch", "fixed_batch.onnx", nextProductSpec, []string{"model.yaml:5", `input "features"`, "fixed batch of 1"}},
		{"too few labels", "next_product.onnx", strings.Replace(nextProductSpec, "p7, p8", "p7", 1), []string{"model.yaml:20", `output "probabilities"`, "8 wide", "7 labels"}},
		{"wrong input name", "next_product.onnx", strings.Replace(nextProductSpec, "- name: features", "- name: feats", 1), []string{`input "feats" is not an input of the graph`, `the graph's input "features"`}},
		{"too few elements", "next_product.onnx", strings.Replace(nextProductSpec, "      - {context: day_of_week}\n", "", 1), []string{"float32 [?, 12]", "fills 11 positions"}},
		{"unknown feature", "next_product.onnx", strings.Replace(nextProductSpec, "cust:f9", "cust:f99", 1), []string{"model.yaml:16", `"cust:f99"`}},
		{"text without encoding", "next_product.onnx", strings.Replace(nextProductSpec, "cust:f9", "cust:segment", 1), []string{"cust:segment is text"}},
		{"channel model with one input declared", "channel.onnx", nextProductSpec, []string{`the graph's input "context"`}},
		{"unknown snapshot in the lineage", "next_product.onnx", strings.Replace(nextProductSpec, "snap-123", "snap-999", 1), []string{`snapshot "snap-999" is not a recorded export`}},
	} {
		writeFile(t, spec, tc.spec)
		got := c.fails("models", "--server", base, "register", testModel(t, tc.model), "--spec", spec)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, got, w)
			}
		}
	}
}
