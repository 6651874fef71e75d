package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/modelcheck"
)

// checkCmd is `tailor models check`; server is the models command's
// --server.
func (a *app) checkCmd(server *string) *cobra.Command {
	var spec, at, format string
	var entities, ctxFlags, values []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check MODEL.onnx [--spec model.yaml] --entity KEY=VALUE[,KEY=VALUE] [--entity ...] [--context K=V] [--value K=N] [--at TIME] [--format text|json]",
		Short: "Show the input vector serving would assemble for an entity, position by position, and the model's outputs",
		Long: "check validates the metadata (--spec, default model.yaml beside the model) against MODEL.onnx\n" +
			"and the server's applied definitions as `models register` would, then assembles the model's\n" +
			"input tensors for each --entity with serving's own code: online features from the server's\n" +
			"GetOnlineFeatures (the answer a prediction would use), --context fields, --value request\n" +
			"values, and hour_of_day / day_of_week derived from --at in the context's timezone. It prints\n" +
			"each position's source (view:feature, context:name, request:name), which part of the element\n" +
			"it is (value, array[k], one_hot[word], index, missing_indicator), the raw value with its\n" +
			"status (PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE, MISSING) and the number the tensor holds; then it\n" +
			"runs the model on ONNX Runtime and prints its labelled outputs. Nothing is registered.\n\n" +
			"Compare the vector with your own encoding of the same entity before registering.\n\n" +
			"Example:\n" +
			"  tailor models check model.onnx --spec model.yaml --entity customer_id=c1 \\\n" +
			"      --context device=ios,timezone=Europe/Berlin --value basket=30 --server http://127.0.0.1:8080",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--format %q: text or json", format)
			}
			req, err := checkRequest(args[0], spec, at, entities, ctxFlags, values)
			if err != nil {
				return err
			}
			client := featurestorev1connect.NewFeatureServiceClient(&http.Client{Timeout: timeout}, *server)
			rep, err := modelcheck.Check(cmd.Context(), client, req)
			if err != nil {
				return checkError(*server, args[0], req.SpecFile, err)
			}
			if format == "json" {
				return writeCheckJSON(a.out, *server, args[0], req.SpecFile, rep)
			}
			writeCheckText(a.out, *server, args[0], req.SpecFile, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec, "spec", "", "the model's metadata (default: model.yaml beside the model)")
	f.StringArrayVar(&entities, "entity", nil, "one instance's join keys: key=value[,key=value]; repeat for more instances")
	f.StringArrayVar(&ctxFlags, "context", nil, "request context: key=value[,key=value] (device, timezone, ...); repeatable")
	f.StringArrayVar(&values, "value", nil, "request values: key=number[,key=number]; repeatable")
	f.StringVar(&at, "at", "", "request time hour_of_day and day_of_week derive from: RFC3339, 'YYYY-MM-DD HH:MM:SS' (UTC) or epoch seconds (default: now)")
	f.StringVar(&format, "format", "text", "text (a table per input), or json")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up on the server after this long")
	return cmd
}

// checkRequest reads the files and flags of a check.
func checkRequest(model, spec, at string, entities, ctxFlags, values []string) (modelcheck.Request, error) {
	req := modelcheck.Request{SpecFile: spec, At: time.Now()}
	if req.SpecFile == "" {
		req.SpecFile = filepath.Join(filepath.Dir(model), "model.yaml")
	}
	var err error
	if req.Model, err = os.ReadFile(model); err != nil {
		return req, err
	}
	if req.SpecYAML, err = os.ReadFile(req.SpecFile); err != nil {
		return req, fmt.Errorf("metadata: %w", err)
	}
	if at != "" {
		if req.At, err = tablefile.ParseTimestamp(at); err != nil {
			return req, fmt.Errorf("--at: %w", err)
		}
	}
	for _, e := range entities {
		keys, err := pairs("--entity", e)
		if err != nil {
			return req, err
		}
		req.Entities = append(req.Entities, keys)
	}
	req.Context = map[string]string{}
	for _, c := range ctxFlags {
		kv, err := pairs("--context", c)
		if err != nil {
			return req, err
		}
		for k, v := range kv {
			req.Context[k] = v
		}
	}
	req.Values, err = numbers("--value", values)
	return req, err
}

// checkError says which flag or file a failed check points at.
func checkError(server, model, specFile string, err error) error {
	var re *modelcheck.RequestError
	var inv *registry.InvalidError
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("--%s: %w", re.Field, err)
	case errors.As(err, &inv):
		return fmt.Errorf("registration would refuse %s with %s (checked against the server's definitions):\n%w", model, specFile, err)
	}
	return fmt.Errorf("%s: %w", server, err)
}

// writeCheckText prints each instance's inputs as tables, position by
// position, with the vector as a model would be fed it, and its outputs.
func writeCheckText(out io.Writer, server, model, specFile string, rep *modelcheck.Report) {
	fmt.Fprintf(out, "model %s (%s) from %s with %s\n", rep.Spec.Name, rep.Spec.Task, model, specFile)
	fmt.Fprintf(out, "features from %s, definitions version %d; request time %s\n", server, rep.DefinitionsVersion, rep.At.UTC().Format(time.RFC3339))
	for _, inst := range rep.Instances {
		fmt.Fprintln(out)
		if len(inst.Entity) > 0 {
			fmt.Fprintf(out, "entity %s\n", modelcheck.EntityText(inst.Entity))
		}
		for _, in := range inst.Inputs {
			fmt.Fprintf(out, "input %s %s [1, %d]\n", in.Name, in.Type, len(in.Positions))
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "  POS\tSOURCE\tPART\tSTATUS\tRAW\tVALUE\tNOTE")
			vec := make([]string, len(in.Positions))
			for i, p := range in.Positions {
				vec[i] = number(in.Type, p.Value)
				fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Index, p.Source, p.Part, p.Status, rawText(p), vec[i], p.Note)
			}
			w.Flush()
			fmt.Fprintf(out, "  vector: [%s]\n", strings.Join(vec, ", "))
		}
		for _, o := range inst.Outputs {
			fmt.Fprintf(out, "output %s\n", o.GetName())
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for i, v := range o.GetValues() {
				label := strconv.Itoa(i)
				if i < len(o.GetLabels()) {
					label = o.GetLabels()[i]
				}
				fmt.Fprintf(w, "  %s\t%s\n", label, strconv.FormatFloat(v, 'g', 6, 64))
			}
			for i, s := range o.GetStrings() {
				fmt.Fprintf(w, "  %d\t%s\n", i, s)
			}
			w.Flush()
		}
	}
}

// number renders a tensor value as its element type holds it.
func number(typ string, v float64) string {
	switch typ {
	case "float32":
		return strconv.FormatFloat(v, 'g', -1, 32)
	case "float64":
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strconv.FormatInt(int64(v), 10)
}

// rawText renders a raw value for people: text quoted, null for a
// present null, - for nothing found.
func rawText(p assemble.Position) string {
	if p.Raw == nil {
		if p.Status == assemble.StatusPresent {
			return "null"
		}
		return "-"
	}
	switch x := p.Raw.(type) {
	case string:
		return strconv.Quote(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	b, err := json.Marshal(rawJSON(p.Raw))
	if err != nil {
		return fmt.Sprint(p.Raw)
	}
	return string(b)
}

// numberJSON is a tensor value as JSON: a number in its element type's
// shortest form, or NaN and infinities as text (JSON has no such number).
func numberJSON(typ string, v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return number(typ, v)
	}
	return json.Number(number(typ, v))
}

// rawJSON is a raw value as JSON: numbers as numberJSON writes them,
// timestamps in RFC3339.
func rawJSON(v any) any {
	switch x := v.(type) {
	case float32:
		return numberJSON("float32", float64(x))
	case float64:
		return numberJSON("float64", x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []float32:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = rawJSON(f)
		}
		return out
	}
	return v
}

type checkJSON struct {
	Model              string         `json:"model"`
	Task               string         `json:"task"`
	File               string         `json:"file"`
	Spec               string         `json:"spec"`
	Server             string         `json:"server"`
	DefinitionsVersion uint64         `json:"definitions_version"`
	At                 string         `json:"at"`
	Instances          []instanceJSON `json:"instances"`
}

type instanceJSON struct {
	Entity  map[string]string `json:"entity"`
	Inputs  []inputJSON       `json:"inputs"`
	Outputs []outputJSON      `json:"outputs"`
}

type inputJSON struct {
	Name      string         `json:"name"`
	Type      string         `json:"type"`
	Shape     []int          `json:"shape"`
	Positions []positionJSON `json:"positions"`
}

type positionJSON struct {
	Index  int    `json:"index"`
	Source string `json:"source"`
	Part   string `json:"part"`
	Raw    any    `json:"raw"`
	Status string `json:"status"`
	Value  any    `json:"value"`
	Note   string `json:"note,omitempty"`
}

type outputJSON struct {
	Name    string    `json:"name"`
	Labels  []string  `json:"labels,omitempty"`
	Values  []float64 `json:"values,omitempty"`
	Strings []string  `json:"strings,omitempty"`
}

func writeCheckJSON(out io.Writer, server, model, specFile string, rep *modelcheck.Report) error {
	doc := checkJSON{Model: rep.Spec.Name, Task: rep.Spec.Task, File: model, Spec: specFile, Server: server,
		DefinitionsVersion: rep.DefinitionsVersion, At: rep.At.UTC().Format(time.RFC3339Nano), Instances: []instanceJSON{}}
	for _, inst := range rep.Instances {
		ij := instanceJSON{Entity: inst.Entity}
		for _, in := range inst.Inputs {
			inj := inputJSON{Name: in.Name, Type: in.Type, Shape: []int{1, len(in.Positions)}, Positions: []positionJSON{}}
			for _, p := range in.Positions {
				inj.Positions = append(inj.Positions, positionJSON{Index: p.Index, Source: p.Source, Part: p.Part.String(),
					Raw: rawJSON(p.Raw), Status: string(p.Status), Value: numberJSON(in.Type, p.Value), Note: p.Note})
			}
			ij.Inputs = append(ij.Inputs, inj)
		}
		for _, o := range inst.Outputs {
			ij.Outputs = append(ij.Outputs, outputJSON{Name: o.GetName(), Labels: o.GetLabels(), Values: o.GetValues(), Strings: o.GetStrings()})
		}
		doc.Instances = append(doc.Instances, ij)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
