package featureserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// MaxEntityRows bounds the entity rows of one GetOnlineFeatures call.
const MaxEntityRows = 10_000

// GetOnlineFeatures answers the latest features of each entity row.
func (s *Server) GetOnlineFeatures(ctx context.Context, req *connect.Request[featurestorev1.GetOnlineFeaturesRequest]) (*connect.Response[featurestorev1.GetOnlineFeaturesResponse], error) {
	av := s.defs.Load()
	msg := req.Msg
	var refs []definitions.FeatureRef
	var err error
	switch f := msg.GetFeatures().(type) {
	case *featurestorev1.GetOnlineFeaturesRequest_FeatureService:
		refs, err = av.resolveService(f.FeatureService)
	case *featurestorev1.GetOnlineFeaturesRequest_FeatureRefs:
		refs, err = av.Repo.ResolveRefs(f.FeatureRefs.GetRefs())
		if err == nil && len(refs) == 0 {
			err = errors.New("no feature references given")
		}
	default:
		err = errors.New("name a feature_service or give feature_refs")
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if n := len(msg.GetEntities()); n > MaxEntityRows {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d entity rows in one request; the limit is %d", n, MaxEntityRows))
	}
	rows := entityRows(msg.GetEntities())
	for i, e := range rows {
		for k, v := range e.GetKeys() {
			switch v.GetKind().(type) {
			case *featurestorev1.Value_StringValue, *featurestorev1.Value_Int64Value, *featurestorev1.Value_Int32Value:
			default:
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("entity row %d: join key %q must be a string or an integer", i, k))
			}
		}
	}
	results, err := s.online.Get(ctx, av.Repo, refs, rows)
	if err != nil {
		return nil, rpcerr.Error(ctx, fmt.Errorf("online features: %w", err))
	}
	out := &featurestorev1.GetOnlineFeaturesResponse{Rows: make([]*featurestorev1.OnlineRow, len(results))}
	for _, r := range refs {
		out.FeatureNames = append(out.FeatureNames, offline.OutputName(r, msg.GetFullFeatureNames()))
	}
	b := newResponseBuilder(len(results) * len(refs))
	for i, row := range results {
		vals := make([]*featurestorev1.FeatureValue, len(row))
		for j := range row {
			vals[j] = b.featureValue(&row[j])
		}
		out.Rows[i] = b.onlineRow(vals)
	}
	return connect.NewResponse(out), nil
}

// responseBuilder makes the messages of one response from slabs, a few
// allocations per response instead of several per value; the messages are
// never copied, only pointed to.
type responseBuilder struct {
	fvs  []featurestorev1.FeatureValue
	vals []featurestorev1.Value
	rows []featurestorev1.OnlineRow
	// Scalar kinds, made on first use.
	f64s []featurestorev1.Value_Float64Value
	f32s []featurestorev1.Value_Float32Value
	i64s []featurestorev1.Value_Int64Value
	i32s []featurestorev1.Value_Int32Value
	strs []featurestorev1.Value_StringValue
	n    int
	// Consecutive values of one row share their event timestamp.
	lastTS  time.Time
	lastPTS *timestamppb.Timestamp
}

func newResponseBuilder(n int) *responseBuilder {
	return &responseBuilder{n: n, fvs: make([]featurestorev1.FeatureValue, 0, n), vals: make([]featurestorev1.Value, 0, n)}
}

func slab[T any](s *[]T, n int) *T {
	if *s == nil {
		*s = make([]T, 0, n)
	}
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}

func (b *responseBuilder) onlineRow(vals []*featurestorev1.FeatureValue) *featurestorev1.OnlineRow {
	r := slab(&b.rows, max(b.n, 1))
	r.Values = vals
	return r
}

func (b *responseBuilder) featureValue(res *onlinestore.Result) *featurestorev1.FeatureValue {
	fv := slab(&b.fvs, b.n)
	fv.Status = status(res.Status)
	if !res.EventTS.IsZero() {
		if b.lastPTS == nil || !res.EventTS.Equal(b.lastTS) {
			b.lastTS, b.lastPTS = res.EventTS, timestamppb.New(res.EventTS)
		}
		fv.EventTimestamp = b.lastPTS
	}
	if res.Status == onlinestore.Present {
		fv.Value = b.value(res)
	}
	return fv
}

// value converts a present value straight from the cached row, without
// boxing scalars; nil for null.
func (b *responseBuilder) value(res *onlinestore.Result) *featurestorev1.Value {
	r, j := res.Row, res.Index
	if r == nil || j >= r.Len() || r.Kind(j) == onlinetier.Null {
		return nil
	}
	switch res.Type {
	case definitions.Float64:
		k := slab(&b.f64s, b.n)
		k.Float64Value = r.Float(j)
		v := slab(&b.vals, b.n)
		v.Kind = k
		return v
	case definitions.Float32:
		k := slab(&b.f32s, b.n)
		k.Float32Value = r.Float32(j)
		v := slab(&b.vals, b.n)
		v.Kind = k
		return v
	case definitions.Int64:
		k := slab(&b.i64s, b.n)
		k.Int64Value = r.Int(j)
		v := slab(&b.vals, b.n)
		v.Kind = k
		return v
	case definitions.Int32:
		k := slab(&b.i32s, b.n)
		k.Int32Value = int32(r.Int(j))
		v := slab(&b.vals, b.n)
		v.Kind = k
		return v
	case definitions.String:
		k := slab(&b.strs, b.n)
		k.StringValue = r.Str(j)
		v := slab(&b.vals, b.n)
		v.Kind = k
		return v
	}
	return ProtoValue(res.Value())
}

// entityRows reads join keys straight from the request's messages.
type entityRows []*featurestorev1.EntityRow

func (r entityRows) Len() int { return len(r) }

func (r entityRows) JoinKey(i int, key string) (onlinestore.KeyValue, bool) {
	return KeyValue(r[i].GetKeys()[key])
}

// KeyValue reads a join key sent as a protobuf value: text or an integer;
// ok is false for anything else, or nil.
func KeyValue(v *featurestorev1.Value) (onlinestore.KeyValue, bool) {
	switch x := v.GetKind().(type) {
	case *featurestorev1.Value_StringValue:
		return onlinestore.KeyValue{Str: x.StringValue}, true
	case *featurestorev1.Value_Int64Value:
		return onlinestore.KeyValue{Int: x.Int64Value, IsInt: true}, true
	case *featurestorev1.Value_Int32Value:
		return onlinestore.KeyValue{Int: int64(x.Int32Value), IsInt: true}, true
	}
	return onlinestore.KeyValue{}, false
}

func status(s onlinestore.Status) featurestorev1.FeatureStatus {
	switch s {
	case onlinestore.Present:
		return featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT
	case onlinestore.NotFound:
		return featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND
	case onlinestore.OutsideMaxAge:
		return featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE
	}
	return featurestorev1.FeatureStatus_FEATURE_STATUS_UNSPECIFIED
}

// ProtoValue converts a Go feature value (int32, int64, float32, float64,
// string, bool, time.Time, []float32, []int64, []string) to its protobuf
// form; nil (null) and other types give nil.
func ProtoValue(v any) *featurestorev1.Value {
	switch x := v.(type) {
	case int32:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int32Value{Int32Value: x}}
	case int64:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: x}}
	case float32:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: x}}
	case float64:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: x}}
	case string:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: x}}
	case bool:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_BoolValue{BoolValue: x}}
	case time.Time:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_TimestampValue{TimestampValue: timestamppb.New(x)}}
	case []float32:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Float32ListValue{Float32ListValue: &featurestorev1.Float32List{Values: x}}}
	case []int64:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64ListValue{Int64ListValue: &featurestorev1.Int64List{Values: x}}}
	case []string:
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: x}}}
	}
	return nil
}
