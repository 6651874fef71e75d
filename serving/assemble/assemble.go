// Package assemble turns a model's metadata into input tensors: it
// compiles each input's elements against the applied definitions once,
// then fills batches of rows from online feature values, request context
// and request values, applying defaults, missing indicators and the
// one-hot and index encodings. Explain fills the same way, in the same
// pass of the same code, and says for each position where its number
// comes from: source, part of the element, raw value and its status.
package assemble

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
)

// Tensor is one filled input: Shape [rows, width], data in row-major
// order in the slice of its element type.
type Tensor struct {
	Name    string
	Shape   []int64
	Float32 []float32
	Float64 []float64
	Int64   []int64
	Int32   []int32
}

// Plan is a model's inputs compiled against the definitions.
type Plan struct {
	// Refs are the distinct features the model reads, in first-use order:
	// fetch them, then give their values to Fill in this order.
	Refs   []definitions.FeatureRef
	inputs []input
}

type sourceKind int

const (
	fromFeature sourceKind = iota
	fromContext
	fromRequest
)

type input struct {
	name, typ string
	width     int
	elems     []element
}

type element struct {
	kind    sourceKind
	ref     int    // index in Plan.Refs
	name    string // context or request field
	typ     definitions.ValueType
	oneHot  bool
	index   bool
	vocab   map[string]int
	words   []string // the vocabulary in order, for explanations
	size    int
	def     float64
	missing bool
	source  string // what Explain calls the element: view:feature, context:name, request:name
}

// Compile prepares spec's inputs; the features it names must resolve in
// repo (the registry validated that when the model was registered, but
// definitions may have changed since).
func Compile(spec *registry.Spec, repo *definitions.Repo) (*Plan, error) {
	p := &Plan{}
	refIndex := map[string]int{}
	for _, in := range spec.Inputs {
		ip := input{name: in.Name, typ: in.Type, width: in.Width()}
		for _, e := range in.Elements {
			el := element{size: e.Size, def: e.Default, missing: e.MissingIndicator, oneHot: e.Encoding == "one_hot", index: e.Encoding == "index"}
			if len(e.Vocabulary) > 0 {
				el.words = e.Vocabulary
				el.vocab = make(map[string]int, len(e.Vocabulary))
				for i, v := range e.Vocabulary {
					el.vocab[v] = i
				}
			}
			switch {
			case e.Feature != "":
				refs, err := repo.ResolveRefs([]string{e.Feature})
				if err != nil {
					return nil, fmt.Errorf("model %s input %q: %w", spec.Name, in.Name, err)
				}
				if len(refs) != 1 {
					return nil, fmt.Errorf("model %s input %q: %q names %d features", spec.Name, in.Name, e.Feature, len(refs))
				}
				key := refs[0].String()
				i, ok := refIndex[key]
				if !ok {
					i = len(p.Refs)
					refIndex[key] = i
					p.Refs = append(p.Refs, refs[0])
				}
				el.kind, el.ref, el.typ, el.source = fromFeature, i, refs[0].Type, key
			case e.Context != "":
				el.kind, el.name, el.source = fromContext, e.Context, e.Source()
			default:
				el.kind, el.name, el.source = fromRequest, e.Request, e.Source()
			}
			ip.elems = append(ip.elems, el)
		}
		p.inputs = append(p.inputs, ip)
	}
	return p, nil
}

// Row is one instance to score.
type Row struct {
	// Features are the values of Plan.Refs in order: nil when null, not
	// found or outside the view's max age (all are "missing").
	Features []any
	// Context holds the fields the caller passed (device, any name) and
	// those derived from the request time: hour_of_day, day_of_week.
	Context map[string]any
	// Request holds the request values by name.
	Request map[string]float64
}

// DeriveContext adds the fields derived from the request time to ctx:
// hour_of_day (0..23) and day_of_week (0 = Monday) in the time zone the
// context names under "timezone" (an IANA name), else UTC. An unknown
// zone is an error naming it.
func DeriveContext(ctx map[string]any, at time.Time) (map[string]any, error) {
	out := make(map[string]any, len(ctx)+2)
	for k, v := range ctx {
		out[k] = v
	}
	loc := time.UTC
	if v, ok := ctx[ContextTimezone]; ok && v != nil {
		tz, isText := v.(string)
		if !isText {
			return nil, fmt.Errorf("context timezone: %v is not an IANA time zone name such as Europe/Paris", v)
		}
		if tz != "" {
			l, err := time.LoadLocation(tz)
			if err != nil {
				return nil, fmt.Errorf("context timezone %q: %w", tz, err)
			}
			loc = l
		}
	}
	local := at.In(loc)
	out[registry.ContextHourOfDay] = int64(local.Hour())
	out[registry.ContextDayOfWeek] = int64((int(local.Weekday()) + 6) % 7)
	return out, nil
}

// Fill lays rows out as the model's input tensors.
func (p *Plan) Fill(rows []Row) []Tensor {
	out, _ := p.fill(rows, nil, false)
	return out
}

// fill is Fill, and when explain is set also the explanation of each
// row: both come from one pass of the same code.
func (p *Plan) fill(rows []Row, status [][]Status, explain bool) ([]Tensor, [][]Input) {
	out := make([]Tensor, len(p.inputs))
	var expl [][]Input
	var ex *explainer
	if explain {
		expl = make([][]Input, len(rows))
		for r := range expl {
			expl[r] = make([]Input, len(p.inputs))
		}
		ex = &explainer{}
	}
	vals := []float64{}
	for t, in := range p.inputs {
		vals = vals[:0]
		if cap(vals) < len(rows)*in.width {
			vals = make([]float64, 0, len(rows)*in.width)
		}
		for r := range rows {
			if ex != nil {
				ex.startRow(rowStatus(status, r))
			}
			for i := range in.elems {
				vals = in.elems[i].append(vals, &rows[r], ex)
			}
			if ex != nil {
				expl[r][t] = Input{Name: in.name, Type: in.typ, Positions: ex.take()}
			}
		}
		out[t] = convert(in, len(rows), vals)
		if ex != nil {
			for r := range rows {
				readBack(&out[t], r, expl[r][t].Positions)
			}
		}
	}
	return out, expl
}

func convert(in input, n int, vals []float64) Tensor {
	t := Tensor{Name: in.name, Shape: []int64{int64(n), int64(in.width)}}
	switch in.typ {
	case "float64":
		t.Float64 = append([]float64(nil), vals...)
	case "int64":
		t.Int64 = make([]int64, len(vals))
		for i, v := range vals {
			t.Int64[i] = int64(v)
		}
	case "int32":
		t.Int32 = make([]int32, len(vals))
		for i, v := range vals {
			t.Int32[i] = int32(v)
		}
	default:
		t.Float32 = make([]float32, len(vals))
		for i, v := range vals {
			t.Float32[i] = float32(v)
		}
	}
	return t
}

// append lays out one element of one row; ex, when not nil, is told
// what each number appended is.
func (e *element) append(dst []float64, r *Row, ex *explainer) []float64 {
	var v any
	var ok bool
	switch e.kind {
	case fromFeature:
		if e.ref < len(r.Features) {
			v = r.Features[e.ref]
			ok = v != nil
		}
	case fromContext:
		v, ok = r.Context[e.name]
		ok = ok && v != nil
	case fromRequest:
		// Request values are numbers: no boxing on the hot path.
		var f float64
		f, ok = r.Request[e.name]
		if e.oneHot || e.index {
			v = f
			break
		}
		present := ok
		if !ok {
			f = e.def
		}
		dst = append(dst, f)
		if ex != nil {
			ex.element(e, r)
			ex.add(Part{Kind: PartValue}, ex.raw, defaultNote(ok, true))
		}
		if e.missing {
			dst = append(dst, boolNum(!present))
			if ex != nil {
				ex.add(Part{Kind: PartMissingIndicator}, ex.raw, "")
			}
		}
		return dst
	}
	present := ok
	if ex != nil {
		ex.element(e, r)
	}
	switch {
	case e.oneHot:
		start := len(dst)
		for range e.vocab {
			dst = append(dst, 0)
		}
		in := false
		if ok {
			var i int
			if i, in = e.vocab[text(v)]; in {
				dst[start+i] = 1
			}
		}
		if ex != nil {
			ex.oneHot(e, v, ok && !in)
		}
	case e.index:
		f := e.def
		in := false
		if ok {
			var i int
			if i, in = e.vocab[text(v)]; in {
				f = float64(i)
			}
		}
		dst = append(dst, f)
		if ex != nil {
			ex.index(v, ok, in)
		}
	case e.size > 0:
		dst = appendArray(dst, v, e.size, e.def)
		if ex != nil {
			ex.array(v, e.size)
		}
	default:
		f, isNum := Number(v)
		if !ok || !isNum {
			f, present = e.def, false
		}
		dst = append(dst, f)
		if ex != nil {
			ex.add(Part{Kind: PartValue}, v, defaultNote(ok, isNum))
		}
	}
	if e.missing {
		if present {
			dst = append(dst, 0)
		} else {
			dst = append(dst, 1)
		}
		if ex != nil {
			ex.add(Part{Kind: PartMissingIndicator}, ex.raw, "")
		}
	}
	return dst
}

func boolNum(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Number reads a scalar as a number, as inputs are assembled (trainers
// encode their training sets with it too): booleans are 0/1, timestamps
// Unix seconds; text that is a number counts too. NaN and infinities are
// not numbers here: they are missing (the default, and the missing
// indicator set), in training and serving alike.
func Number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case float32:
		f := float64(x)
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case int:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case time.Time:
		return float64(x.Unix()), true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}

// text is a value's vocabulary key: text as is, numbers in decimal.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	}
	return fmt.Sprint(v)
}

func appendArray(dst []float64, v any, size int, def float64) []float64 {
	n := 0
	switch x := v.(type) {
	case []float32:
		for _, f := range x[:min(len(x), size)] {
			dst = append(dst, float64(f))
			n++
		}
	case []int64:
		for _, f := range x[:min(len(x), size)] {
			dst = append(dst, float64(f))
			n++
		}
	case []float64:
		for _, f := range x[:min(len(x), size)] {
			dst = append(dst, f)
			n++
		}
	}
	for ; n < size; n++ {
		dst = append(dst, def)
	}
	return dst
}

// Reads lists the context fields and the request values the plan reads,
// each once, in first-use order.
func (p *Plan) Reads() (context, request []string) {
	seen := map[string]bool{}
	for _, in := range p.inputs {
		for _, e := range in.elems {
			key := fmt.Sprint(e.kind, e.name)
			if e.kind == fromFeature || seen[key] {
				continue
			}
			seen[key] = true
			if e.kind == fromContext {
				context = append(context, e.name)
			} else {
				request = append(request, e.name)
			}
		}
	}
	return context, request
}

// ContextTimezone is the context field naming the IANA time zone the
// derived fields are computed in.
const ContextTimezone = "timezone"

// NameError is a request value or context field that no input of the
// models asked reads (a misspelling would otherwise fall back to the
// default silently), or a derived context field the caller tried to set.
type NameError struct {
	// Kind is "request value" or "context field".
	Kind, Name string
	// Expected lists the names that are read.
	Expected []string
	// Derived is set for hour_of_day and day_of_week, which the server
	// derives from the request time.
	Derived bool
}

func (e *NameError) Error() string {
	if e.Derived {
		return fmt.Sprintf("context field %q is derived from the request time (and the %q context field): set request_time instead", e.Name, ContextTimezone)
	}
	exp := "none"
	if len(e.Expected) > 0 {
		exp = strings.Join(e.Expected, ", ")
	}
	return fmt.Sprintf("%s %q is not read by the model (expected: %s)", e.Kind, e.Name, exp)
}

// InvalidInput classifies the error as the caller's mistake.
func (e *NameError) InvalidInput() bool { return true }

// CheckNames refuses context fields and request values that none of
// plans reads; "timezone" is always accepted, and the derived fields
// never are.
func CheckNames(context []string, request []string, plans ...*Plan) error {
	ctxKnown, reqKnown := map[string]bool{ContextTimezone: true}, map[string]bool{}
	var ctxList, reqList []string
	for _, p := range plans {
		c, r := p.Reads()
		for _, n := range c {
			if !ctxKnown[n] && n != registry.ContextHourOfDay && n != registry.ContextDayOfWeek {
				ctxKnown[n] = true
				ctxList = append(ctxList, n)
			}
		}
		for _, n := range r {
			if !reqKnown[n] {
				reqKnown[n] = true
				reqList = append(reqList, n)
			}
		}
	}
	ctxList = append(ctxList, ContextTimezone)
	slices.Sort(context)
	slices.Sort(request)
	for _, n := range context {
		if n == registry.ContextHourOfDay || n == registry.ContextDayOfWeek {
			return &NameError{Kind: "context field", Name: n, Derived: true}
		}
		if !ctxKnown[n] {
			return &NameError{Kind: "context field", Name: n, Expected: ctxList}
		}
	}
	for _, n := range request {
		if !reqKnown[n] {
			return &NameError{Kind: "request value", Name: n, Expected: reqList}
		}
	}
	return nil
}
