// Package registry is tailor's model registry: ONNX models with the
// metadata serving needs (how each input tensor is assembled from
// features, request context and request values; what each output's labels
// are), validated before a version exists, stored in ClickHouse as
// immutable, numbered, content-addressed versions, with aliases that move
// under an audit trail.
package registry

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// Tasks a model can serve.
const (
	TaskNextProduct = "next_product"
	TaskTiming      = "timing"
	TaskChannel     = "channel"
	TaskGeneric     = "generic"
)

var tasks = []string{TaskNextProduct, TaskTiming, TaskChannel, TaskGeneric}

// Context fields derived from a request by the server.
const (
	ContextHourOfDay = "hour_of_day" // 0..23 in the request's time zone
	ContextDayOfWeek = "day_of_week" // 0 = Monday .. 6 = Sunday
	ContextDevice    = "device"      // text, e.g. web, ios, android
)

// Spec is a model's metadata: what its model.yaml says.
type Spec struct {
	Name        string
	Task        string
	Description string
	Inputs      []InputSpec
	Outputs     []OutputSpec
	Metrics     map[string]float64
	Tags        map[string]string
	Lineage     map[string]string
	// Serving tunes how servers run the model.
	Serving ServingSpec
	Pos     definitions.Pos
}

// ServingSpec tunes how a server runs a model; zero values take the
// server's defaults.
type ServingSpec struct {
	// MaxBatch is the most rows one run takes when requests are batched
	// dynamically; 1 turns batching off.
	MaxBatch int
	// MaxQueueDelay is how long the first queued request may wait for
	// others (Triton's max_queue_delay); a full batch never waits.
	MaxQueueDelay time.Duration
	// IntraOpThreads and InterOpThreads size ONNX Runtime's thread pools
	// for the model.
	IntraOpThreads, InterOpThreads int
	// Instances is how many runs of the model may go at once (Triton's
	// instance count); 0 takes the server's default.
	Instances int
}

// InputSpec is one input tensor of the model, shaped [batch, width]: each
// element fills the next positions of the last dimension, in order.
type InputSpec struct {
	Name string
	// Type is the tensor's element type: float32 (default), float64,
	// int64 or int32.
	Type     string
	Elements []Element
	Pos      definitions.Pos
}

// Width is the size of the tensor's last dimension.
func (in *InputSpec) Width() int {
	n := 0
	for i := range in.Elements {
		n += in.Elements[i].Width()
	}
	return n
}

// Element is one source of values in an input tensor.
type Element struct {
	// Exactly one of Feature (a view:feature reference), Context (a field
	// the server derives from the request, or one the caller passes in its
	// context) and Request (a value the caller passes) is set.
	Feature, Context, Request string
	// Encoding turns text (and other discrete) values into numbers:
	// "one_hot" gives one position per Vocabulary entry (all zero for a
	// value outside it), "index" gives the entry's position (Default for
	// a value outside it). Empty: the value is numeric.
	Encoding   string
	Vocabulary []string
	// Size is how many positions an array feature fills (shorter arrays
	// are padded with Default, longer ones cut).
	Size int
	// Default replaces a null or missing value.
	Default float64
	// MissingIndicator adds one position: 1 when the value was null or
	// missing, else 0.
	MissingIndicator bool
	Pos              definitions.Pos
}

// Source names the element as "feature:view:name", "context:name" or
// "request:name".
func (e *Element) Source() string {
	switch {
	case e.Feature != "":
		return e.Feature
	case e.Context != "":
		return "context:" + e.Context
	}
	return "request:" + e.Request
}

// Width is how many positions the element fills.
func (e *Element) Width() int {
	n := 1
	switch {
	case e.Encoding == "one_hot":
		n = len(e.Vocabulary)
	case e.Size > 0:
		n = e.Size
	}
	if e.MissingIndicator {
		n++
	}
	return n
}

// OutputSpec is one output of the model and the labels of its last
// dimension: product ids, timing buckets (durations from now, e.g. 1h, 1d)
// or channel names.
type OutputSpec struct {
	Name   string
	Labels []string
	// Buckets are the timing labels parsed as durations (task timing).
	Buckets []time.Duration
	Pos     definitions.Pos
}

// SpecError is one problem in a model.yaml, at the line it was written.
type SpecError struct {
	Pos definitions.Pos
	Msg string
}

func (e *SpecError) Error() string { return fmt.Sprintf("%s: %s", e.Pos, e.Msg) }

// InvalidInput marks a problem in a model.yaml as the caller's mistake.
func (e *SpecError) InvalidInput() bool { return true }

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// ParseSpec parses a model.yaml; file names it in error positions. Every
// problem found is reported, each at its line.
func ParseSpec(file string, content []byte) (*Spec, error) {
	p := &specParser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		line := 0
		if m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		return nil, &SpecError{Pos: definitions.Pos{File: file, Line: line}, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &SpecError{Pos: definitions.Pos{File: file, Line: 1}, Msg: "empty model metadata"}
	}
	s := p.spec(doc.Content[0])
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return s, nil
}

type specParser struct {
	file string
	errs []error
}

func (p *specParser) pos(n *yaml.Node) definitions.Pos {
	return definitions.Pos{File: p.file, Line: n.Line}
}

func (p *specParser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, &SpecError{Pos: p.pos(n), Msg: fmt.Sprintf(format, args...)})
}

// fields checks n is a mapping of allowed keys and returns the values.
func (p *specParser) fields(n *yaml.Node, what string, allowed ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s: expected a mapping", what)
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !slices.Contains(allowed, k.Value):
			p.errorf(k, "%s: unknown key %q (allowed: %s)", what, k.Value, strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			p.errorf(k, "%s: key %q given twice", what, k.Value)
		default:
			out[k.Value] = v
		}
	}
	return out
}

// decode reads a value node into dst, reporting a type mismatch at its line.
func (p *specParser) decode(n *yaml.Node, what string, dst any) bool {
	if n == nil {
		return false
	}
	if err := n.Decode(dst); err != nil {
		p.errorf(n, "%s: %s", what, strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "))
		return false
	}
	return true
}

func (p *specParser) list(n *yaml.Node, what string) []*yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s: expected a list", what)
		return nil
	}
	return n.Content
}

func (p *specParser) spec(root *yaml.Node) *Spec {
	s := &Spec{Pos: p.pos(root)}
	f := p.fields(root, "model", "name", "task", "description", "inputs", "outputs", "metrics", "tags", "lineage", "serving")
	p.decode(f["name"], "name", &s.Name)
	p.decode(f["task"], "task", &s.Task)
	p.decode(f["description"], "description", &s.Description)
	p.decode(f["metrics"], "metrics", &s.Metrics)
	p.decode(f["tags"], "tags", &s.Tags)
	p.decode(f["lineage"], "lineage", &s.Lineage)
	switch {
	case f["name"] == nil:
		p.errorf(root, "model: name is required")
	case !nameRE.MatchString(s.Name):
		p.errorf(f["name"], "name %q: use letters, digits, _ . - (not starting with a digit)", s.Name)
	}
	if n := f["serving"]; n != nil {
		s.Serving = p.serving(n)
	}
	if s.Task == "" {
		s.Task = TaskGeneric
	} else if !slices.Contains(tasks, s.Task) {
		p.errorf(f["task"], "task %q: want one of %s", s.Task, strings.Join(tasks, ", "))
	}
	seen := map[string]bool{}
	for _, n := range p.list(f["inputs"], "inputs") {
		in := p.input(n)
		if seen[in.Name] {
			p.errorf(n, "input %q declared twice", in.Name)
		}
		seen[in.Name] = true
		s.Inputs = append(s.Inputs, in)
	}
	if len(s.Inputs) == 0 {
		p.errorf(root, "model: at least one input is required")
	}
	seen = map[string]bool{}
	for _, n := range p.list(f["outputs"], "outputs") {
		out := p.output(n, s.Task)
		if seen[out.Name] {
			p.errorf(n, "output %q declared twice", out.Name)
		}
		seen[out.Name] = true
		s.Outputs = append(s.Outputs, out)
	}
	if len(s.Outputs) == 0 {
		p.errorf(root, "model: at least one output is required")
	}
	return s
}

func (p *specParser) serving(n *yaml.Node) ServingSpec {
	var sv ServingSpec
	f := p.fields(n, "serving", "max_batch", "max_queue_delay", "intra_op_threads", "inter_op_threads", "instances")
	p.decode(f["instances"], "serving: instances", &sv.Instances)
	p.decode(f["max_batch"], "serving: max_batch", &sv.MaxBatch)
	p.decode(f["intra_op_threads"], "serving: intra_op_threads", &sv.IntraOpThreads)
	p.decode(f["inter_op_threads"], "serving: inter_op_threads", &sv.InterOpThreads)
	var delay string
	if p.decode(f["max_queue_delay"], "serving: max_queue_delay", &delay) {
		d, err := time.ParseDuration(delay)
		if err != nil || d < 0 {
			p.errorf(f["max_queue_delay"], "serving: max_queue_delay %q is not a duration like 500us or 2ms", delay)
		}
		sv.MaxQueueDelay = d
	}
	for key, v := range map[string]int{"max_batch": sv.MaxBatch, "intra_op_threads": sv.IntraOpThreads, "inter_op_threads": sv.InterOpThreads, "instances": sv.Instances} {
		if v < 0 {
			p.errorf(f[key], "serving: %s must not be negative", key)
		}
	}
	return sv
}

var inputTypes = []string{"float32", "float64", "int64", "int32"}

func (p *specParser) input(n *yaml.Node) InputSpec {
	in := InputSpec{Pos: p.pos(n), Type: "float32"}
	f := p.fields(n, "input", "name", "type", "elements")
	if !p.decode(f["name"], "input name", &in.Name) || in.Name == "" {
		p.errorf(n, "input: name is required (the graph input it feeds)")
	}
	what := fmt.Sprintf("input %q", in.Name)
	if p.decode(f["type"], what+": type", &in.Type) && !slices.Contains(inputTypes, in.Type) {
		p.errorf(f["type"], "%s: type %q: want one of %s", what, in.Type, strings.Join(inputTypes, ", "))
	}
	for _, e := range p.list(f["elements"], what+": elements") {
		in.Elements = append(in.Elements, p.element(e, what))
	}
	if len(in.Elements) == 0 {
		p.errorf(n, "%s: elements are required (features, context or request values, in order)", what)
	}
	return in
}

func (p *specParser) element(n *yaml.Node, input string) Element {
	e := Element{Pos: p.pos(n)}
	f := p.fields(n, input+" element", "feature", "context", "request", "encoding", "vocabulary", "size", "default", "missing_indicator")
	p.decode(f["feature"], "feature", &e.Feature)
	p.decode(f["context"], "context", &e.Context)
	p.decode(f["request"], "request", &e.Request)
	p.decode(f["encoding"], "encoding", &e.Encoding)
	p.decode(f["vocabulary"], "vocabulary", &e.Vocabulary)
	p.decode(f["size"], "size", &e.Size)
	p.decode(f["default"], "default", &e.Default)
	p.decode(f["missing_indicator"], "missing_indicator", &e.MissingIndicator)
	set := 0
	for _, s := range []string{e.Feature, e.Context, e.Request} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		p.errorf(n, "%s element: give exactly one of feature, context or request", input)
	}
	switch e.Encoding {
	case "":
		if len(e.Vocabulary) > 0 {
			p.errorf(f["vocabulary"], "%s element %s: a vocabulary needs encoding one_hot or index", input, e.Source())
		}
	case "one_hot", "index":
		if len(e.Vocabulary) == 0 {
			p.errorf(n, "%s element %s: encoding %s needs a vocabulary", input, e.Source(), e.Encoding)
		}
		if dup := firstDuplicate(e.Vocabulary); dup != "" {
			p.errorf(f["vocabulary"], "%s element %s: %q is in the vocabulary twice", input, e.Source(), dup)
		}
	default:
		p.errorf(f["encoding"], "%s element %s: encoding %q: want one_hot or index", input, e.Source(), e.Encoding)
	}
	if e.Size < 0 || (e.Size > 0 && e.Encoding != "") {
		p.errorf(f["size"], "%s element %s: size is the number of positions of an array feature (a positive number, without an encoding)", input, e.Source())
	}
	return e
}

func (p *specParser) output(n *yaml.Node, task string) OutputSpec {
	o := OutputSpec{Pos: p.pos(n)}
	f := p.fields(n, "output", "name", "labels")
	if !p.decode(f["name"], "output name", &o.Name) || o.Name == "" {
		p.errorf(n, "output: name is required (the graph output it reads)")
	}
	p.decode(f["labels"], fmt.Sprintf("output %q: labels", o.Name), &o.Labels)
	if dup := firstDuplicate(o.Labels); dup != "" {
		p.errorf(f["labels"], "output %q: label %q given twice", o.Name, dup)
	}
	if task != TaskGeneric && len(o.Labels) == 0 {
		p.errorf(n, "output %q: a %s model needs the labels of its probabilities", o.Name, task)
	}
	if task == TaskTiming {
		for _, l := range o.Labels {
			d, err := ParseDuration(l)
			if err != nil || d <= 0 {
				p.errorf(f["labels"], "output %q: timing label %q is not a positive duration like 6h, 1d or 90m", o.Name, l)
				continue
			}
			o.Buckets = append(o.Buckets, d)
		}
	}
	return o
}

// ParseDuration reads a duration like Go's time.ParseDuration, plus days
// ("1d", "1.5d") and weeks ("2w").
func ParseDuration(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if num, ok := strings.CutSuffix(s, suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(f * float64(unit)), nil
		}
	}
	return time.ParseDuration(s)
}

func firstDuplicate(xs []string) string {
	seen := map[string]bool{}
	for _, x := range xs {
		if seen[x] {
			return x
		}
		seen[x] = true
	}
	return ""
}
