package offline

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// Event is one row for a windowed view's event table: column name to
// value (string, int64, float64, bool or time.Time; nil for null).
type Event map[string]any

// InsertEvents stores events in the event table of windowed view v, in
// one insert. Every event gives the same columns, among them the view's
// join keys and timestamp; the table's other columns take their defaults.
// Each value must fit its column's type; errors name the event and the
// column.
func (s *Store) InsertEvents(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, events []Event) error {
	b, err := s.PrepareEvents(ctx, repo, v, events)
	if err != nil || b == nil {
		return err
	}
	return s.InsertEventBatch(ctx, b)
}

// EventBatch is events checked against their table, ready to insert (or
// to look for with StoredRows after an insert whose answer was lost).
type EventBatch struct {
	// Table is the event table ("db.name").
	Table string
	// Columns are the columns the events give, with their types.
	Columns RowColumns
	// Rows hold each event's values in Columns order, as the driver takes
	// them.
	Rows [][]any
}

// PrepareEvents checks events against the event table of windowed view v
// (see InsertEvents); nil when there are none.
func (s *Store) PrepareEvents(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, events []Event) (*EventBatch, error) {
	if !v.Windowed() {
		return nil, &EventError{Event: -1, Msg: fmt.Sprintf("feature view %q is not windowed: push its features instead", v.Name)}
	}
	if len(events) == 0 {
		return nil, nil
	}
	table := s.viewTable(v)
	cols, ok, err := s.tableColumns(ctx, table)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("event table %s does not exist", table.Plain())
	}
	types := map[string]string{}
	for _, c := range cols {
		types[c.Name] = c.Type
	}
	var names []string
	for name := range events[0] {
		names = append(names, name)
	}
	sort.Strings(names)
	required := []string{v.Source.TimestampField}
	for _, e := range repo.JoinKeys(v) {
		required = append(required, e.JoinKey)
	}
	for _, r := range required {
		if _, ok := events[0][r]; !ok {
			return nil, &EventError{Event: 0, Column: r, Msg: "no value (the view's join keys and timestamp are required)"}
		}
	}
	b := &EventBatch{Table: table.Plain(), Rows: make([][]any, len(events))}
	for _, name := range names {
		if _, ok := types[name]; !ok || name == InsertedAtColumn {
			return nil, &EventError{Event: 0, Msg: fmt.Sprintf("%s has no column %q", table.Plain(), name)}
		}
		b.Columns.Names = append(b.Columns.Names, name)
		b.Columns.Types = append(b.Columns.Types, types[name])
	}
	for i, ev := range events {
		if len(ev) != len(names) {
			return nil, &EventError{Event: i, Msg: fmt.Sprintf("it gives %d columns, event 0 gives %d (%s): every event gives the same columns", len(ev), len(names), strings.Join(names, ", "))}
		}
		row := make([]any, len(names))
		for j, name := range names {
			val, ok := ev[name]
			if !ok {
				return nil, &EventError{Event: i, Column: name, Msg: "no value, though event 0 gives one"}
			}
			cv, err := columnValue(types[name], val)
			if err != nil {
				return nil, &EventError{Event: i, Column: name, Msg: err.Error()}
			}
			row[j] = cv
		}
		b.Rows[i] = row
	}
	return b, nil
}

// InsertEventBatch stores prepared events in one insert.
func (s *Store) InsertEventBatch(ctx context.Context, b *EventBatch) error {
	quoted := make([]string, len(b.Columns.Names))
	for i, n := range b.Columns.Names {
		quoted[i] = QuoteIdent(n)
	}
	db, name, _ := strings.Cut(b.Table, ".")
	table := tableRef{DB: db, Name: name}
	batch, err := s.conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (%s)", table, strings.Join(quoted, ", ")))
	if err != nil {
		return fmt.Errorf("insert events into %s: %w", b.Table, err)
	}
	for i, row := range b.Rows {
		if err := batch.Append(row...); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("insert events into %s: event %d: %w", b.Table, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert events into %s: %w", b.Table, err)
	}
	return nil
}

// EventError is an event that does not fit a windowed view's event table:
// it names the event (its index in the push) and the column.
type EventError struct {
	Event  int // -1: not about one event
	Column string
	Msg    string
}

func (e *EventError) Error() string {
	switch {
	case e.Event < 0:
		return e.Msg
	case e.Column == "":
		return fmt.Sprintf("event %d: %s", e.Event, e.Msg)
	}
	return fmt.Sprintf("event %d: column %q: %s", e.Event, e.Column, e.Msg)
}

// InvalidInput marks a bad event as the caller's mistake.
func (e *EventError) InvalidInput() bool { return true }

// columnValue converts v to the Go type the driver takes for a column of
// ClickHouse type chType.
func columnValue(chType string, v any) (any, error) {
	nullable := strings.HasPrefix(chType, "Nullable(") || strings.HasPrefix(chType, "LowCardinality(Nullable(")
	if v == nil {
		if !nullable {
			return nil, fmt.Errorf("null, but the column is %s", chType)
		}
		return nil, nil
	}
	t := unwrapCH(chType)
	bad := func() (any, error) { return nil, fmt.Errorf("%v (%T) does not fit %s", v, v, chType) }
	switch {
	case t == "String" || strings.HasPrefix(t, "FixedString("):
		if s, ok := v.(string); ok {
			return s, nil
		}
		return bad()
	case t == "DateTime" || strings.HasPrefix(t, "DateTime(") || t == "Date":
		if ts, ok := v.(time.Time); ok {
			if err := CheckInstant(ts); err != nil {
				return nil, err
			}
			return ts.UTC(), nil
		}
		return bad()
	case t == "Float64" || t == "Float32":
		var f float64
		switch x := v.(type) {
		case float64:
			f = x
		case int64:
			f = float64(x)
		default:
			return bad()
		}
		if t == "Float32" {
			return ToFloat32(f)
		}
		return f, nil
	}
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case bool:
		if x {
			n = 1
		}
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return bad()
		}
		n = int64(x)
	default:
		return bad()
	}
	fits := func(lo, hi int64) bool { return n >= lo && n <= hi }
	switch t {
	case "Int8":
		if fits(math.MinInt8, math.MaxInt8) {
			return int8(n), nil
		}
	case "Int16":
		if fits(math.MinInt16, math.MaxInt16) {
			return int16(n), nil
		}
	case "Int32":
		if fits(math.MinInt32, math.MaxInt32) {
			return int32(n), nil
		}
	case "Int64":
		return n, nil
	case "UInt8":
		if fits(0, math.MaxUint8) {
			return uint8(n), nil
		}
	case "UInt16":
		if fits(0, math.MaxUint16) {
			return uint16(n), nil
		}
	case "UInt32":
		if fits(0, math.MaxUint32) {
			return uint32(n), nil
		}
	case "UInt64":
		if n >= 0 {
			return uint64(n), nil
		}
	}
	return bad()
}
