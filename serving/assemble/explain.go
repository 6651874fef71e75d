package assemble

import (
	"fmt"
	"strconv"

	"github.com/tailorhq/tailor/registry"
)

// Status says where an element's raw value came from, or why there is
// none.
type Status string

// The statuses of a raw value: the online store's for features, and
// present or missing for request context and values.
const (
	// StatusPresent: the value was found (a feature's may be null).
	StatusPresent Status = "PRESENT"
	// StatusNotFound: the online store has no row for the entity.
	StatusNotFound Status = "NOT_FOUND"
	// StatusOutsideMaxAge: the entity's latest row is older than the
	// view's ttl.
	StatusOutsideMaxAge Status = "OUTSIDE_MAX_AGE"
	// StatusMissing: the request (or its context) does not carry it, or
	// a feature's value was not given.
	StatusMissing Status = "MISSING"
)

// PartKind is what a position holds of its element.
type PartKind string

// The parts of an element.
const (
	PartValue            PartKind = "value"             // the value as a number
	PartArray            PartKind = "array"             // slot Part.Slot of an array
	PartOneHot           PartKind = "one_hot"           // 1 when the value is Part.Word
	PartIndex            PartKind = "index"             // the value's position in the vocabulary
	PartMissingIndicator PartKind = "missing_indicator" // 1 when the value is missing
)

// Part is what one position holds of its element.
type Part struct {
	Kind PartKind
	Slot int    // PartArray: the slot
	Word string // PartOneHot: the vocabulary entry
}

// String renders the part as value, array[k], one_hot[word], index or
// missing_indicator.
func (p Part) String() string {
	switch p.Kind {
	case PartArray:
		return fmt.Sprintf("array[%d]", p.Slot)
	case PartOneHot:
		return "one_hot[" + p.Word + "]"
	}
	return string(p.Kind)
}

// Position is one number of one row of an input tensor and where it comes
// from.
type Position struct {
	// Index is the position in the tensor's last dimension.
	Index int
	// Source is the element: view:feature, context:name or request:name.
	Source string
	Part   Part
	// Raw is the value found (an array slot's own value); nil when
	// missing or null.
	Raw    any
	Status Status
	// Value is the number the tensor holds, read back from it.
	Value float64
	// Note says why Value is not simply Raw: a default, a padding slot,
	// a value outside the vocabulary; empty otherwise.
	Note string
}

// Input is one row of one input tensor, explained.
type Input struct {
	Name string
	// Type is the tensor's element type: float32, float64, int64, int32.
	Type      string
	Positions []Position
}

// Explain lays rows out exactly as Fill does, and says for each row, each
// input tensor and each of its positions where the number comes from.
// status, when not nil, holds each row's feature statuses in Refs order
// as the online store reported them (without it a nil feature reads as
// missing). The explained numbers are read back from the returned
// tensors, the very ones a model is run on.
func (p *Plan) Explain(rows []Row, status [][]Status) ([]Tensor, [][]Input) {
	return p.fill(rows, status, true)
}

func rowStatus(status [][]Status, r int) []Status {
	if r < len(status) {
		return status[r]
	}
	return nil
}

// explainer records the positions of one row of one input as the
// elements append them.
type explainer struct {
	status []Status
	pos    []Position
	// The element being laid out.
	source string
	raw    any
	st     Status
	note   string // appended to each position's note (derived context)
}

func (x *explainer) startRow(status []Status) {
	x.status = status
	x.pos = nil
}

// take returns the row's positions.
func (x *explainer) take() []Position {
	p := x.pos
	x.pos = nil
	return p
}

// element starts an element: its source, raw value and status as the
// row holds them.
func (x *explainer) element(e *element, r *Row) {
	x.source, x.raw, x.st, x.note = e.source, nil, StatusMissing, ""
	switch e.kind {
	case fromFeature:
		if e.ref < len(r.Features) {
			x.raw = r.Features[e.ref]
		}
		switch {
		case e.ref < len(x.status) && x.status[e.ref] != "":
			x.st = x.status[e.ref]
		case x.raw != nil:
			x.st = StatusPresent
		}
	case fromContext:
		if v, ok := r.Context[e.name]; ok && v != nil {
			x.raw, x.st = v, StatusPresent
			if e.name == registry.ContextHourOfDay || e.name == registry.ContextDayOfWeek {
				tz, _ := r.Context["timezone"].(string)
				if tz == "" {
					tz = "UTC"
				}
				x.note = "from the request time in " + tz
			}
		}
	case fromRequest:
		if f, ok := r.Request[e.name]; ok {
			x.raw, x.st = f, StatusPresent
		}
	}
}

// add records the next position.
func (x *explainer) add(part Part, raw any, note string) {
	if x.note != "" {
		if note != "" {
			note += "; "
		}
		note += x.note
	}
	x.pos = append(x.pos, Position{Index: len(x.pos), Source: x.source, Part: part, Raw: raw, Status: x.st, Note: note})
}

func (x *explainer) oneHot(e *element, v any, unknown bool) {
	note := ""
	if unknown {
		note = strconv.Quote(text(v)) + " is not in the vocabulary"
	}
	for _, w := range e.words {
		x.add(Part{Kind: PartOneHot, Word: w}, x.raw, note)
	}
}

func (x *explainer) index(v any, ok, in bool) {
	note := defaultNote(ok, true)
	if ok && !in {
		note = strconv.Quote(text(v)) + " is not in the vocabulary: default"
	}
	x.add(Part{Kind: PartIndex}, x.raw, note)
}

// array records the slots of an array: its own values, then padding.
func (x *explainer) array(v any, size int) {
	var items []any
	switch a := v.(type) {
	case []float32:
		for _, f := range a {
			items = append(items, f)
		}
	case []int64:
		for _, f := range a {
			items = append(items, f)
		}
	case []float64:
		for _, f := range a {
			items = append(items, f)
		}
	}
	for k := range size {
		var raw any
		note := "padding: default"
		if v == nil {
			note = "default"
		}
		if k < len(items) {
			raw, note = items[k], ""
		}
		if k == size-1 && len(items) > size {
			note = fmt.Sprintf("the array has %d values; the rest are cut", len(items))
		}
		x.add(Part{Kind: PartArray, Slot: k}, raw, note)
	}
}

// defaultNote says why a value position holds the default.
func defaultNote(found, isNumber bool) string {
	switch {
	case !found:
		return "default"
	case !isNumber:
		return "not a number: default"
	}
	return ""
}

// readBack sets each position's Value from row r of t.
func readBack(t *Tensor, r int, pos []Position) {
	w := int(t.Shape[1])
	for i := range pos {
		j := r*w + pos[i].Index
		switch {
		case t.Float32 != nil:
			pos[i].Value = float64(t.Float32[j])
		case t.Float64 != nil:
			pos[i].Value = t.Float64[j]
		case t.Int64 != nil:
			pos[i].Value = float64(t.Int64[j])
		case t.Int32 != nil:
			pos[i].Value = float64(t.Int32[j])
		}
	}
}
