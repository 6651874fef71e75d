package featureserver

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// Push stores the rows in ClickHouse in one insert, answers only once they
// are stored, and then makes the online tier serve them. Rows pushed to a
// windowed view are events of its event table.
func (s *Server) Push(ctx context.Context, req *connect.Request[featurestorev1.PushRequest]) (*connect.Response[featurestorev1.PushResponse], error) {
	av := s.defs.Load()
	v, ok := av.Repo.View(req.Msg.GetFeatureView())
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unknown feature view %q", req.Msg.GetFeatureView()))
	}
	rows := req.Msg.GetRows()
	if len(rows) == 0 {
		return connect.NewResponse(&featurestorev1.PushResponse{}), nil
	}
	if len(rows) > MaxEntityRows {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d rows in one push; the limit is %d", len(rows), MaxEntityRows))
	}
	plan, err := s.planPush(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	if v.Windowed() {
		// Its features are computed from events: the rows are events.
		return s.pushEvents(ctx, av.Repo, v, rows, plan)
	}
	batch, err := pushBatch(av.Repo, v, rows, plan.now, plan.created())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	defer batch.rec.Release()
	insert := func() error {
		_, err := s.store.Ingest(ctx, av.Repo, v.Name, "push", &oneBatch{rec: batch.rec}, offline.IngestOptions{Direct: true, Unlogged: true})
		return err
	}
	cols, ids := pushIdentity(av.Repo, v, batch.rows)
	stored := func() (uint64, error) { return s.store.StoredRows(ctx, s.store.TableOf(v), cols, ids, plan.since()) }
	replayed, err := s.storeOnce(ctx, plan, v.Name, len(rows), insert, stored)
	if err != nil {
		return nil, rpcerr.Error(ctx, fmt.Errorf("store pushed rows: %w", err))
	}
	for _, r := range batch.rows {
		if err := s.online.Observe(v, r.keys, r.event, r.created, r.values); err != nil {
			s.log.Warn("online tier", "view", v.Name, "err", err)
		}
	}
	return connect.NewResponse(&featurestorev1.PushResponse{RowsStored: int64(len(rows)), Replayed: replayed}), nil
}

// pushIdentity lists the columns that identify a pushed row in its view's
// table (offline.IdentityColumns) and each row's values of them.
func pushIdentity(repo *definitions.Repo, v *definitions.FeatureView, rows []pushedRow) (offline.RowColumns, [][]any) {
	cols := offline.IdentityColumns(repo, v)
	created := offline.CreatedColumn(v) != ""
	ids := make([][]any, len(rows))
	for i, r := range rows {
		id := append([]any{}, r.keys...)
		id = append(id, time.Unix(r.event, 0).UTC())
		if created {
			id = append(id, time.Unix(r.created, 0).UTC())
		}
		ids[i] = id
	}
	return cols, ids
}

// joinKeyValue reads an int64 join key sent as decimal text (as
// GetOnlineFeatures accepts it) as an integer; anything else is unchanged.
func joinKeyValue(v *featurestorev1.Value, t definitions.ValueType) *featurestorev1.Value {
	if sv, ok := v.GetKind().(*featurestorev1.Value_StringValue); ok && t == definitions.Int64 {
		if n, err := strconv.ParseInt(sv.StringValue, 10, 64); err == nil {
			return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
		}
	}
	return v
}

// MaxClockSkew is how far ahead of the server clock a pushed row's event
// time may be.
const MaxClockSkew = time.Minute

type oneBatch struct{ rec arrow.RecordBatch }

func (o *oneBatch) Schema() *arrow.Schema { return o.rec.Schema() }
func (o *oneBatch) Next() (arrow.RecordBatch, error) {
	if o.rec == nil {
		return nil, io.EOF
	}
	r := o.rec
	o.rec = nil
	r.Retain() // the ingest releases what it reads
	return r, nil
}

type pushedRow struct {
	keys           []any
	event, created int64
	values         []any
}

type pushed struct {
	rec  arrow.RecordBatch
	rows []pushedRow
}

// pushBatch checks the pushed rows against the view and builds the Arrow
// batch to store; every problem names the row and the column.
func pushBatch(repo *definitions.Repo, v *definitions.FeatureView, rows []*featurestorev1.PushRow, now time.Time, nowCreated int64) (*pushed, error) {
	ents := repo.JoinKeys(v)
	fields := make([]arrow.Field, 0, len(ents)+2+len(v.Features))
	for _, e := range ents {
		t := arrow.DataType(arrow.BinaryTypes.String)
		if e.Type == definitions.Int64 {
			t = arrow.PrimitiveTypes.Int64
		}
		fields = append(fields, arrow.Field{Name: e.JoinKey, Type: t})
	}
	fields = append(fields, arrow.Field{Name: v.Source.TimestampField, Type: offline.ArrowType(definitions.Timestamp)})
	created := offline.CreatedColumn(v)
	if created != "" {
		fields = append(fields, arrow.Field{Name: created, Type: offline.ArrowType(definitions.Timestamp)})
	}
	for _, f := range v.Features {
		fields = append(fields, arrow.Field{Name: f.Name, Type: offline.ArrowType(f.Type), Nullable: true})
	}
	known := map[string]bool{}
	for _, f := range fields {
		known[f.Name] = true
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	out := &pushed{rows: make([]pushedRow, len(rows))}
	for i, r := range rows {
		vals := r.GetValues()
		for name := range vals {
			if !known[name] || name == v.Source.TimestampField || name == created {
				return nil, fmt.Errorf("row %d: %q is not a join key or feature of view %q", i, name, v.Name)
			}
		}
		pr := &out.rows[i]
		col := 0
		for _, e := range ents {
			val, err := goValue(joinKeyValue(vals[e.JoinKey], e.Type), e.Type)
			if err != nil || val == nil {
				return nil, fmt.Errorf("row %d: join key %q: %v", i, e.JoinKey, errOrMissing(err))
			}
			pr.keys = append(pr.keys, val)
			appendArrow(b.Field(col), val)
			col++
		}
		if r.GetEventTimestamp() == nil {
			return nil, fmt.Errorf("row %d: event_timestamp is required", i)
		}
		if err := CheckTimestamp(r.GetEventTimestamp()); err != nil {
			return nil, fmt.Errorf("row %d: event_timestamp: %w", i, err)
		}
		if ahead := r.GetEventTimestamp().AsTime().Sub(now); ahead > MaxClockSkew {
			// Such a row is not the latest "now" by the point-in-time rule:
			// no read would see it until its time comes.
			return nil, fmt.Errorf("row %d: event_timestamp %s is %s ahead of the server clock (at most %s is accepted)",
				i, r.GetEventTimestamp().AsTime().Format(time.RFC3339), ahead.Round(time.Second), MaxClockSkew)
		}
		pr.event = r.GetEventTimestamp().AsTime().Unix()
		appendArrow(b.Field(col), time.Unix(pr.event, 0))
		col++
		pr.created = nowCreated
		if r.GetCreatedTimestamp() != nil {
			if err := CheckTimestamp(r.GetCreatedTimestamp()); err != nil {
				return nil, fmt.Errorf("row %d: created_timestamp: %w", i, err)
			}
			pr.created = r.GetCreatedTimestamp().AsTime().Unix()
		}
		if created != "" {
			appendArrow(b.Field(col), time.Unix(pr.created, 0))
			col++
		}
		pr.values = make([]any, len(v.Features))
		for j, f := range v.Features {
			val, err := goValue(vals[f.Name], f.Type)
			if err != nil {
				return nil, fmt.Errorf("row %d: feature %q (%s): %v", i, f.Name, f.Type, err)
			}
			if val == nil && f.Type.IsArray() {
				// ClickHouse stores a null array as an empty one: the
				// tier must hold what a read-through would find.
				val = emptyArray(f.Type)
			}
			pr.values[j] = val
			appendArrow(b.Field(col), val)
			col++
		}
	}
	out.rec = b.NewRecordBatch()
	return out, nil
}

// emptyArray is the empty value of an array type.
func emptyArray(t definitions.ValueType) any {
	switch t {
	case definitions.ArrayFloat32:
		return []float32{}
	case definitions.ArrayInt64:
		return []int64{}
	}
	return []string{}
}

// CheckTimestamp refuses a timestamp that is malformed or outside the
// instants ClickHouse stores (offline.CheckInstant), where no feature can
// be.
func CheckTimestamp(ts *timestamppb.Timestamp) error {
	if err := ts.CheckValid(); err != nil {
		return err
	}
	return offline.CheckInstant(ts.AsTime())
}

func errOrMissing(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("missing")
}

// goValue converts a pushed value to the Go form of type t; nil is null.
func goValue(v *featurestorev1.Value, t definitions.ValueType) (any, error) {
	if v == nil || v.GetKind() == nil {
		return nil, nil
	}
	m := v.ProtoReflect()
	bad := fmt.Errorf("a %s cannot hold a %s", m.WhichOneof(m.Descriptor().Oneofs().ByName("kind")).Name(), t)
	switch k := v.GetKind().(type) {
	case *featurestorev1.Value_Int32Value:
		switch t {
		case definitions.Int32:
			return k.Int32Value, nil
		case definitions.Int64:
			return int64(k.Int32Value), nil
		case definitions.Float32:
			return float32(k.Int32Value), nil
		case definitions.Float64:
			return float64(k.Int32Value), nil
		}
	case *featurestorev1.Value_Int64Value:
		switch t {
		case definitions.Int32:
			if k.Int64Value < math.MinInt32 || k.Int64Value > math.MaxInt32 {
				return nil, fmt.Errorf("%d is out of range for int32", k.Int64Value)
			}
			return int32(k.Int64Value), nil
		case definitions.Int64:
			return k.Int64Value, nil
		case definitions.Float64:
			return float64(k.Int64Value), nil
		}
	case *featurestorev1.Value_Float32Value:
		switch t {
		case definitions.Float32:
			return k.Float32Value, nil
		case definitions.Float64:
			return float64(k.Float32Value), nil
		}
	case *featurestorev1.Value_Float64Value:
		switch t {
		case definitions.Float32:
			return offline.ToFloat32(k.Float64Value)
		case definitions.Float64:
			return k.Float64Value, nil
		}
	case *featurestorev1.Value_StringValue:
		if t == definitions.String {
			return k.StringValue, nil
		}
	case *featurestorev1.Value_BoolValue:
		if t == definitions.Bool {
			return k.BoolValue, nil
		}
	case *featurestorev1.Value_TimestampValue:
		if t == definitions.Timestamp {
			if err := CheckTimestamp(k.TimestampValue); err != nil {
				return nil, err
			}
			return k.TimestampValue.AsTime().UTC().Truncate(time.Second), nil
		}
	case *featurestorev1.Value_Float32ListValue:
		if t == definitions.ArrayFloat32 {
			return k.Float32ListValue.GetValues(), nil
		}
	case *featurestorev1.Value_Int64ListValue:
		if t == definitions.ArrayInt64 {
			return k.Int64ListValue.GetValues(), nil
		}
	case *featurestorev1.Value_StringListValue:
		if t == definitions.ArrayString {
			return k.StringListValue.GetValues(), nil
		}
	}
	return nil, bad
}

func appendArrow(b array.Builder, v any) {
	if v == nil {
		b.AppendNull()
		return
	}
	switch x := b.(type) {
	case *array.Int32Builder:
		x.Append(v.(int32))
	case *array.Int64Builder:
		x.Append(v.(int64))
	case *array.Float32Builder:
		x.Append(v.(float32))
	case *array.Float64Builder:
		x.Append(v.(float64))
	case *array.StringBuilder:
		x.Append(v.(string))
	case *array.BooleanBuilder:
		x.Append(v.(bool))
	case *array.TimestampBuilder:
		x.Append(arrow.Timestamp(v.(time.Time).UnixMicro()))
	case *array.ListBuilder:
		x.Append(true)
		switch vb := x.ValueBuilder().(type) {
		case *array.Float32Builder:
			vb.AppendValues(v.([]float32), nil)
		case *array.Int64Builder:
			vb.AppendValues(v.([]int64), nil)
		case *array.StringBuilder:
			vb.AppendValues(v.([]string), nil)
		}
	}
}
