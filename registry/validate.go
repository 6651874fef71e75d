package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// Tensor is a graph input or output as ONNX Runtime reports it.
type Tensor struct {
	Name string
	// Kind is tensor, sequence or map (an sklearn ZipMap output is a
	// sequence of maps).
	Kind string
	// Type is the element type (for maps, the value type); KeyType is a
	// map's key type.
	Type, KeyType string
	// Shape has -1 for a dynamic dimension; nil when unknown.
	Shape []int64
}

func (t Tensor) String() string {
	if t.Kind != "" && t.Kind != "tensor" {
		return fmt.Sprintf("%s<map<%s,%s>>", t.Kind, t.KeyType, t.Type)
	}
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = fmt.Sprint(d)
		if d < 0 {
			dims[i] = "?"
		}
	}
	return fmt.Sprintf("%s [%s]", t.Type, strings.Join(dims, ", "))
}

// Inspector reads an ONNX model's inputs and outputs without running it;
// an error means ONNX Runtime cannot load the model.
type Inspector func(model []byte) (inputs, outputs []Tensor, err error)

// ValidateModel parses a model's metadata and checks it against the
// applied definitions and the model's graph as inspect reads it, as
// registration does before a version exists; every problem is an
// *InvalidError.
func ValidateModel(specFile string, specYAML, model []byte, repo *definitions.Repo, inspect Inspector) (*Spec, error) {
	spec, err := ParseSpec(specFile, specYAML)
	if err != nil {
		return nil, &InvalidError{err}
	}
	if len(model) == 0 {
		return nil, &InvalidError{errors.New("the model has no bytes")}
	}
	inputs, outputs, err := inspect(model)
	if err != nil {
		return nil, &InvalidError{fmt.Errorf("ONNX Runtime cannot load the model: %w", err)}
	}
	if err := Validate(spec, repo, inputs, outputs); err != nil {
		return nil, &InvalidError{err}
	}
	return spec, nil
}

// Validate checks a model's metadata against the applied definitions and
// against the graph's inputs and outputs, and reports every mismatch at
// the metadata's line, naming the tensor and what differs.
func Validate(spec *Spec, repo *definitions.Repo, inputs, outputs []Tensor) error {
	var errs []error
	bad := func(pos definitions.Pos, format string, args ...any) {
		errs = append(errs, &SpecError{Pos: pos, Msg: fmt.Sprintf(format, args...)})
	}
	graphIn := map[string]Tensor{}
	for _, t := range inputs {
		graphIn[t.Name] = t
	}
	declared := map[string]bool{}
	for i := range spec.Inputs {
		in := &spec.Inputs[i]
		declared[in.Name] = true
		for j := range in.Elements {
			if err := checkElement(&in.Elements[j], repo); err != nil {
				bad(in.Elements[j].Pos, "input %q: %v", in.Name, err)
			}
		}
		g, ok := graphIn[in.Name]
		if !ok {
			bad(in.Pos, "input %q is not an input of the graph (its inputs: %s)", in.Name, tensorNames(inputs))
			continue
		}
		switch {
		case g.Kind != "" && g.Kind != "tensor":
			bad(in.Pos, "input %q: the graph takes a %s, not a tensor", in.Name, g)
		case g.Type != in.Type:
			bad(in.Pos, "input %q: the graph takes %s, the metadata declares element type %s", in.Name, g, in.Type)
		case len(g.Shape) != 2:
			bad(in.Pos, "input %q: the graph takes %s; tailor feeds [batch, width] tensors", in.Name, g)
		case g.Shape[0] >= 0:
			bad(in.Pos, "input %q: the graph takes %s, a fixed batch of %d; export it with a dynamic batch axis (torch.onnx.export dynamic_axes) so requests can be batched", in.Name, g, g.Shape[0])
		case g.Shape[1] >= 0 && int(g.Shape[1]) != in.Width():
			bad(in.Pos, "input %q: the graph takes %s, the metadata fills %d positions (%s)", in.Name, g, in.Width(), widths(in))
		}
	}
	for _, t := range inputs {
		if !declared[t.Name] {
			bad(spec.Pos, "the graph's input %q (%s) is not declared in the metadata", t.Name, t)
		}
	}
	graphOut := map[string]Tensor{}
	for _, t := range outputs {
		graphOut[t.Name] = t
	}
	for i := range spec.Outputs {
		o := &spec.Outputs[i]
		g, ok := graphOut[o.Name]
		if !ok {
			bad(o.Pos, "output %q is not an output of the graph (its outputs: %s)", o.Name, tensorNames(outputs))
			continue
		}
		if g.Kind == "sequence" || g.Kind == "map" {
			// An sklearn ZipMap: labels are the map's keys, known only when
			// it runs.
			if g.Type != "float32" && g.Type != "float64" {
				bad(o.Pos, "output %q: the graph gives %s; probabilities must be float32 or float64", o.Name, g)
			}
			continue
		}
		if len(o.Labels) == 0 {
			continue
		}
		switch {
		case g.Type != "float32" && g.Type != "float64":
			bad(o.Pos, "output %q: the graph gives %s; labelled probabilities must be float32 or float64", o.Name, g)
		case len(g.Shape) == 0:
			bad(o.Pos, "output %q: the graph gives a scalar %s for %d labels", o.Name, g.Type, len(o.Labels))
		case g.Shape[len(g.Shape)-1] >= 0 && int(g.Shape[len(g.Shape)-1]) != len(o.Labels):
			bad(o.Pos, "output %q: the graph gives %s, %d wide, but the metadata has %d labels", o.Name, g, g.Shape[len(g.Shape)-1], len(o.Labels))
		}
	}
	return errors.Join(errs...)
}

// checkElement checks one input element against the definitions.
func checkElement(e *Element, repo *definitions.Repo) error {
	switch {
	case e.Feature != "":
		refs, err := repo.ResolveRefs([]string{e.Feature})
		if err != nil {
			return err
		}
		if len(refs) != 1 {
			return fmt.Errorf("%q names %d features; an element takes one (list them one by one)", e.Feature, len(refs))
		}
		t := refs[0].Type
		switch {
		case t == definitions.ArrayString:
			return fmt.Errorf("feature %s is %s, which cannot feed a tensor", e.Feature, t)
		case t.IsArray() && e.Size == 0:
			return fmt.Errorf("feature %s is %s: give size, the number of positions it fills", e.Feature, t)
		case !t.IsArray() && e.Size > 0:
			return fmt.Errorf("feature %s is %s, not an array: size does not apply", e.Feature, t)
		case t == definitions.String && e.Encoding == "":
			return fmt.Errorf("feature %s is text: give encoding one_hot or index with its vocabulary", e.Feature)
		}
	case e.Context == ContextDevice && e.Encoding == "":
		return fmt.Errorf("context %s is text: give encoding one_hot or index with its vocabulary", e.Context)
	}
	return nil
}

func widths(in *InputSpec) string {
	parts := make([]string, len(in.Elements))
	for i := range in.Elements {
		parts[i] = fmt.Sprintf("%s: %d", in.Elements[i].Source(), in.Elements[i].Width())
	}
	return strings.Join(parts, ", ")
}

func tensorNames(ts []Tensor) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = fmt.Sprintf("%q %s", t.Name, t)
	}
	slices.Sort(names)
	return strings.Join(names, "; ")
}
