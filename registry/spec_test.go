package registry_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
)

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
      - {name: embedding, type: array<float32>}
      - {name: tags, type: array<string>}
`

const goodSpec = `name: next_product
task: next_product
description: which product next
inputs:
  - name: features
    elements:
      - {feature: "cust:orders", default: 0, missing_indicator: true}
      - {feature: "cust:spend"}
      - {feature: "cust:segment", encoding: one_hot, vocabulary: [gold, silver, bronze]}
      - {feature: "cust:embedding", size: 4}
      - {context: hour_of_day}
      - {context: device, encoding: index, vocabulary: [web, ios, android]}
      - {request: basket_value, default: 0}
outputs:
  - name: probabilities
    labels: [p1, p2, p3]
metrics: {hit_at_5: 0.31}
tags: {team: crm}
lineage: {snapshot: snap-1}
serving: {max_batch: 32, max_queue_delay: 500us, intra_op_threads: 1, instances: 2}
`

func repo(t *testing.T) *definitions.Repo {
	t.Helper()
	r, err := definitions.Parse(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseSpec(t *testing.T) {
	s, err := registry.ParseSpec("model.yaml", []byte(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	// orders 1 + indicator 1, spend 1, segment 3, embedding 4, hour 1, device 1, basket 1
	if w := s.Inputs[0].Width(); w != 13 {
		t.Errorf("width %d, want 13", w)
	}
	if s.Serving.MaxBatch != 32 || s.Serving.MaxQueueDelay != 500*time.Microsecond || s.Serving.IntraOpThreads != 1 || s.Serving.Instances != 2 {
		t.Errorf("serving %+v", s.Serving)
	}
	if s.Inputs[0].Type != "float32" || s.Metrics["hit_at_5"] != 0.31 || s.Lineage["snapshot"] != "snap-1" || s.Tags["team"] != "crm" {
		t.Errorf("parsed %+v", s)
	}
	timing, err := registry.ParseSpec("t.yaml", []byte("name: t\ntask: timing\ninputs: [{name: x, elements: [{request: a}]}]\noutputs: [{name: p, labels: [1h, 1d, 1.5d, 2w]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Hour, 24 * time.Hour, 36 * time.Hour, 14 * 24 * time.Hour}
	for i, d := range timing.Outputs[0].Buckets {
		if d != want[i] {
			t.Errorf("bucket %d = %s, want %s", i, d, want[i])
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"invalid yaml", "name: [", []string{"m.yaml:1", "invalid YAML"}},
		{"unknown key", "name: m\nflavour: x\n", []string{"m.yaml:2", `unknown key "flavour"`}},
		{"bad task", "name: m\ntask: guess\n", []string{"m.yaml:2", `task "guess"`}},
		{"no inputs", "name: m\n", []string{"at least one input", "at least one output"}},
		{"two sources", "name: m\ninputs:\n  - name: x\n    elements:\n      - {feature: a:b, request: c}\noutputs: [{name: y}]\n", []string{"m.yaml:5", "exactly one of feature, context or request"}},
		{"vocab without encoding", "name: m\ninputs:\n  - name: x\n    elements:\n      - {context: device, vocabulary: [a]}\noutputs: [{name: y}]\n", []string{"m.yaml:5", "needs encoding one_hot or index"}},
		{"encoding without vocab", "name: m\ninputs:\n  - name: x\n    elements:\n      - {context: device, encoding: one_hot}\noutputs: [{name: y}]\n", []string{"m.yaml:5", "needs a vocabulary"}},
		{"duplicate vocab", "name: m\ninputs:\n  - name: x\n    elements:\n      - {context: device, encoding: index, vocabulary: [a, a]}\noutputs: [{name: y}]\n", []string{`"a" is in the vocabulary twice`}},
		{"labels needed", "name: m\ntask: channel\ninputs: [{name: x, elements: [{request: a}]}]\noutputs: [{name: y}]\n", []string{"m.yaml:4", "needs the labels"}},
		{"bad timing label", "name: m\ntask: timing\ninputs: [{name: x, elements: [{request: a}]}]\noutputs: [{name: y, labels: [1h, soon]}]\n", []string{`"soon" is not a positive duration`}},
		{"bad input type", "name: m\ninputs: [{name: x, type: complex64, elements: [{request: a}]}]\noutputs: [{name: y}]\n", []string{`type "complex64"`}},
		{"bad serving", "name: m\ninputs: [{name: x, elements: [{request: a}]}]\noutputs: [{name: y}]\nserving: {max_batch: -1, max_queue_delay: soon}\n", []string{"m.yaml:4", "max_queue_delay \"soon\"", "max_batch must not be negative"}},
		{"wrong value type", "name: m\ninputs: [{name: x, elements: [{request: a, default: many}]}]\noutputs: [{name: y}]\n", []string{"m.yaml:2", "default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := registry.ParseSpec("m.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	r := repo(t)
	graphIn := []registry.Tensor{{Name: "features", Kind: "tensor", Type: "float32", Shape: []int64{-1, 13}}}
	graphOut := []registry.Tensor{{Name: "probabilities", Kind: "tensor", Type: "float32", Shape: []int64{-1, 3}}}
	spec := func(t *testing.T, edit func(string) string) *registry.Spec {
		t.Helper()
		s, err := registry.ParseSpec("model.yaml", []byte(edit(goodSpec)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	same := func(s string) string { return s }
	if err := registry.Validate(spec(t, same), r, graphIn, graphOut); err != nil {
		t.Fatalf("a good model was refused: %v", err)
	}
	zipmap := []registry.Tensor{{Name: "probabilities", Kind: "sequence", Type: "float32", KeyType: "string"}}
	if err := registry.Validate(spec(t, same), r, graphIn, zipmap); err != nil {
		t.Fatalf("a ZipMap output was refused: %v", err)
	}
	for _, tc := range []struct {
		name      string
		edit      func(string) string
		in, out   []registry.Tensor
		wantInErr []string
	}{
		{"input name differs", same, []registry.Tensor{{Name: "x", Kind: "tensor", Type: "float32", Shape: []int64{-1, 13}}}, graphOut,
			[]string{`input "features" is not an input of the graph`, `"x" float32 [?, 13]`, `the graph's input "x"`}},
		{"element type differs", same, []registry.Tensor{{Name: "features", Kind: "tensor", Type: "float64", Shape: []int64{-1, 13}}}, graphOut,
			[]string{"model.yaml:5", "float64 [?, 13]", "element type float32"}},
		{"width differs", same, []registry.Tensor{{Name: "features", Kind: "tensor", Type: "float32", Shape: []int64{-1, 12}}}, graphOut,
			[]string{"fills 13 positions", "cust:segment: 3", "cust:embedding: 4"}},
		{"fixed batch", same, []registry.Tensor{{Name: "features", Kind: "tensor", Type: "float32", Shape: []int64{4, 13}}}, graphOut,
			[]string{"fixed batch of 4"}},
		{"output width differs", same, graphIn, []registry.Tensor{{Name: "probabilities", Kind: "tensor", Type: "float32", Shape: []int64{-1, 4}}},
			[]string{"model.yaml:15", "4 wide", "3 labels"}},
		{"output missing", same, graphIn, []registry.Tensor{{Name: "scores", Kind: "tensor", Type: "float32", Shape: []int64{-1, 3}}},
			[]string{`output "probabilities" is not an output of the graph`, `"scores"`}},
		{"unknown feature", func(s string) string { return strings.Replace(s, "cust:spend", "cust:spent", 1) }, graphIn, graphOut,
			[]string{"model.yaml:8", `"cust:spent"`}},
		{"text without encoding", func(s string) string {
			return strings.Replace(s, `{feature: "cust:segment", encoding: one_hot, vocabulary: [gold, silver, bronze]}`, `{feature: "cust:segment"}`, 1)
		}, []registry.Tensor{{Name: "features", Kind: "tensor", Type: "float32", Shape: []int64{-1, 11}}}, graphOut,
			[]string{"model.yaml:9", "cust:segment is text"}},
		{"array without size", func(s string) string {
			return strings.Replace(s, `{feature: "cust:embedding", size: 4}`, `{feature: "cust:embedding"}`, 1)
		},
			[]registry.Tensor{{Name: "features", Kind: "tensor", Type: "float32", Shape: []int64{-1, 10}}}, graphOut,
			[]string{"cust:embedding is array<float32>: give size"}},
		{"string array", func(s string) string {
			return strings.Replace(s, `{feature: "cust:embedding", size: 4}`, `{feature: "cust:tags", size: 4}`, 1)
		}, graphIn, graphOut,
			[]string{"cust:tags is array<string>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := registry.Validate(spec(t, tc.edit), r, tc.in, tc.out)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wantInErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
