package definitions

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// AggFunction is how a window aggregation combines the events in its
// window.
type AggFunction string

// The aggregation functions. Over a window without events, count, sum
// and distinct_count are 0; the others are null.
const (
	AggCount         AggFunction = "count"           // events
	AggSum           AggFunction = "sum"             // of column
	AggMean          AggFunction = "mean"            // of column
	AggMin           AggFunction = "min"             // of column
	AggMax           AggFunction = "max"             // of column
	AggLast          AggFunction = "last"            // column of the latest event
	AggDistinctCount AggFunction = "distinct_count"  // distinct values of column
	AggShare         AggFunction = "share"           // events matching where / all events
	AggDaysSinceLast AggFunction = "days_since_last" // days from the latest event to the instant
)

// AggFunctions lists the functions in documentation order.
var AggFunctions = []AggFunction{AggCount, AggSum, AggMean, AggMin, AggMax, AggLast, AggDistinctCount, AggShare, AggDaysSinceLast}

// Aggregation defines a feature computed from a view's event table: the
// events of the key within Window before the instant asked about (after
// instant-Window, up to and including the instant), filtered by Where,
// combined by Function over Column.
type Aggregation struct {
	Function AggFunction   `json:"function"`
	Column   string        `json:"column,omitempty"`
	Window   time.Duration `json:"window"`
	// Where is a ClickHouse boolean expression over the event table's
	// columns selecting the events counted (for share: the numerator).
	Where string `json:"where,omitempty"`
}

// needsColumn reports whether f reads a column of the events.
func (f AggFunction) needsColumn() bool {
	switch f {
	case AggCount, AggShare, AggDaysSinceLast:
		return false
	}
	return true
}

// defaultType is the feature type of f when the definition gives none
// ("" when it must be given).
func (f AggFunction) defaultType() ValueType {
	switch f {
	case AggCount, AggDistinctCount:
		return Int64
	case AggSum, AggMean, AggShare, AggDaysSinceLast:
		return Float64
	}
	return ""
}

// Windowed reports whether the view's features are window aggregations of
// an event table.
func (v *FeatureView) Windowed() bool {
	return len(v.Features) > 0 && v.Features[0].Agg != nil
}

// LongestWindow is the largest window of a windowed view's aggregations.
func (v *FeatureView) LongestWindow() time.Duration {
	var w time.Duration
	for _, f := range v.Features {
		if f.Agg != nil && f.Agg.Window > w {
			w = f.Agg.Window
		}
	}
	return w
}

// ParseWindow reads a window length: a number of days ("30d") or a Go
// duration ("12h", "90m"), positive and in whole seconds.
func ParseWindow(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("window %q is not a duration (e.g. 30d, 12h, 90m)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("window %q is not a duration (e.g. 30d, 12h, 90m)", s)
		}
	}
	if d <= 0 || d%time.Second != 0 {
		return 0, fmt.Errorf("window %q must be positive and in whole seconds", s)
	}
	return d, nil
}

// aggregations parses a view's aggregations list into features.
func (p *parser) aggregations(n *yaml.Node, obj string) []Feature {
	var out []Feature
	items := p.seq(n, "aggregations")
	if n.Kind == yaml.SequenceNode && len(items) == 0 {
		p.errorf(n, obj, "aggregations must list at least one aggregation")
	}
	for _, an := range items {
		af := p.mapping(an, obj+" aggregation", map[string]bool{"name": true, "function": true, "column": true, "window": true, "where": true, "type": true, "description": true})
		feat := Feature{Pos: p.pos(an), Agg: &Aggregation{}}
		feat.Name, _ = p.str(af["name"], obj, "aggregation name")
		p.ident(an, af["name"], obj, "aggregation name", feat.Name)
		feat.Description, _ = p.str(af["description"], obj, "aggregation description")
		what := fmt.Sprintf("aggregation %q", feat.Name)
		fn, _ := p.str(af["function"], obj, what+" function")
		feat.Agg.Function = AggFunction(fn)
		valid := false
		for _, f := range AggFunctions {
			valid = valid || f == feat.Agg.Function
		}
		switch {
		case af["function"] == nil:
			p.errorf(an, obj, "%s: function is required (one of %s)", what, joinFuncs())
		case !valid:
			p.errorf(af["function"], obj, "%s: unknown function %q (one of %s)", what, fn, joinFuncs())
		}
		feat.Agg.Column, _ = p.str(af["column"], obj, what+" column")
		if valid {
			switch {
			case feat.Agg.Function.needsColumn() && af["column"] == nil:
				p.errorf(an, obj, "%s: %s needs a column", what, fn)
			case !feat.Agg.Function.needsColumn() && af["column"] != nil:
				p.errorf(af["column"], obj, "%s: %s takes no column", what, fn)
			case af["column"] != nil:
				p.ident(an, af["column"], obj, what+" column", feat.Agg.Column)
			}
		}
		if af["window"] == nil {
			p.errorf(an, obj, "%s: window is required (e.g. 30d)", what)
		} else if ws, ok := p.str(af["window"], obj, what+" window"); ok {
			w, err := ParseWindow(ws)
			if err != nil {
				p.errorf(af["window"], obj, "%s: %v", what, err)
			}
			feat.Agg.Window = w
		}
		feat.Agg.Where, _ = p.str(af["where"], obj, what+" where")
		if feat.Agg.Function == AggShare && feat.Agg.Where == "" {
			p.errorf(an, obj, "%s: share needs where (the events it is the share of)", what)
		}
		if t, ok := p.str(af["type"], obj, what+" type"); ok && af["type"] != nil {
			feat.Type = ValueType(t)
			if !ValidFeatureType(feat.Type) || feat.Type.IsArray() {
				p.errorf(af["type"], obj, "%s: type %q is not a scalar feature type", what, t)
			}
		} else if valid {
			feat.Type = feat.Agg.Function.defaultType()
			if feat.Type == "" {
				p.errorf(an, obj, "%s: %s needs a type (the type of column %q)", what, fn, feat.Agg.Column)
			}
		}
		out = append(out, feat)
	}
	return out
}

func joinFuncs() string {
	names := make([]string, len(AggFunctions))
	for i, f := range AggFunctions {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}
