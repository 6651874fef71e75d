// Package predictserver implements the Connect PredictionService: models
// from the registry, fed with online features and request context, run on
// ONNX Runtime.
package predictserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/nba"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/serving/predlog"
)

// MaxInstances bounds the instances of one Predict.
const MaxInstances = 10_000

// Features is what the server needs of the online store.
type Features interface {
	Get(ctx context.Context, repo *definitions.Repo, refs []definitions.FeatureRef, rows onlinestore.EntityRows) ([][]onlinestore.Result, error)
}

// Server is the PredictionService handler.
type Server struct {
	servingv1connect.UnimplementedPredictionServiceHandler

	models   *models.Manager
	nba      *nba.Service
	predLog  *predlog.Log
	features Features
	defs     func() *definitions.Repo
	log      *slog.Logger
	now      func() time.Time
}

// New returns the handler; next, when not nil, answers NextBestAction;
// predictions are logged to pl when it is not nil.
func New(m *models.Manager, next *nba.Service, pl *predlog.Log, features Features, defs func() *definitions.Repo, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{models: m, nba: next, predLog: pl, features: features, defs: defs, log: log, now: time.Now}
}

// requestID is the caller's X-Request-Id, or a new random one.
func requestID(h http.Header) string {
	if id := h.Get("X-Request-Id"); id != "" {
		return id
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// entityText renders join keys as key=value,... in key order.
func entityText(keys map[string]*featurestorev1.Value) string {
	parts := make([]string, 0, len(keys))
	for k, v := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, goValue(v)))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// encoder renders an answer as JSON when the prediction log writes it.
// Answers are not modified once sent, so reading them later is safe.
func encoder(m proto.Message) func() string {
	return func() string {
		b, err := protojson.Marshal(m)
		if err != nil {
			return ""
		}
		return string(b)
	}
}

// NextBestAction answers which products, when and through which channel.
func (s *Server) NextBestAction(ctx context.Context, req *connect.Request[servingv1.NextBestActionRequest]) (*connect.Response[servingv1.NextBestActionResponse], error) {
	if s.nba == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this server has no next-best-action configuration (tailor serve --nba FILE)"))
	}
	m := req.Msg
	if len(m.GetEntities()) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("name the customer: entities, e.g. customer_id"))
	}
	given := make(map[string]any, len(m.GetContext()))
	for k, v := range m.GetContext() {
		given[k] = goValue(v)
	}
	at, err := requestTime(m.GetRequestTime(), s.now)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	start := time.Now()
	ans, err := s.nba.Answer(ctx, nba.Request{
		Entity: entityRows{{Entities: m.GetEntities()}}, Context: given, Values: m.GetValues(),
		K: int(m.GetK()), Exclude: m.GetExclude(), Allowed: m.GetAllowedChannels(), At: at,
	})
	if err != nil {
		return nil, s.fail(ctx, "next best action", err)
	}
	out := &servingv1.NextBestActionResponse{
		SendAt: timestamppb.New(ans.SendAt), Channel: ans.Channel, Fallback: ans.Fallback, FallbackReasons: ans.Reasons,
	}
	for _, p := range ans.Products {
		out.Products = append(out.Products, &servingv1.ScoredLabel{Label: p.Label, Score: p.Score})
	}
	for _, b := range ans.Timing {
		out.Timing = append(out.Timing, &servingv1.TimingBucket{Label: b.Label, After: durationpb.New(b.After), Probability: b.Probability})
	}
	for _, c := range ans.Channels {
		out.Channels = append(out.Channels, &servingv1.ScoredLabel{Label: c.Label, Score: c.Score})
	}
	for _, mr := range ans.Models {
		ref := &servingv1.ModelRef{Name: mr.Name, Version: mr.Version}
		if _, alias, ok := strings.Cut(mr.Ref, "@"); ok {
			ref.Alias = alias
		}
		out.Models = append(out.Models, ref)
	}
	if s.predLog != nil {
		var mv []predlog.ModelVersion
		for _, r := range out.Models {
			mv = append(mv, predlog.ModelVersion{Name: r.Name, Version: r.Version, Alias: r.Alias})
		}
		s.predLog.Record(predlog.Record{
			RequestID: requestID(req.Header()), At: at, Method: predlog.MethodNextBestAction, Models: mv,
			Entity: entityText(m.GetEntities()), InputsDigest: ans.InputsDigest, EncodeOutputs: encoder(out),
			Latency: time.Since(start), Fallback: ans.Fallback,
		})
	}
	return connect.NewResponse(out), nil
}

// Predict runs one model for a batch of instances.
func (s *Server) Predict(ctx context.Context, req *connect.Request[servingv1.PredictRequest]) (*connect.Response[servingv1.PredictResponse], error) {
	msg := req.Msg
	if msg.GetModel() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("name a model: name, name@alias or name:version"))
	}
	n := len(msg.GetInstances())
	if n == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no instances to score"))
	}
	if n > MaxInstances {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d instances in one request; the limit is %d", n, MaxInstances))
	}
	at, err := requestTime(msg.GetRequestTime(), s.now)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	model, release, err := s.models.Get(ctx, msg.GetModel())
	if err != nil {
		return nil, modelError(ctx, msg.GetModel(), err)
	}
	defer release()
	for i, inst := range msg.GetInstances() {
		if err := assemble.CheckNames(slices.Collect(maps.Keys(inst.GetContext())), slices.Collect(maps.Keys(inst.GetValues())), model.Plan); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("instance %d: model %s:%d: %w", i, model.Version.Name, model.Version.Version, err))
		}
	}
	rows, err := s.rows(ctx, model, msg.GetInstances(), at)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	inputs := model.Plan.Fill(rows)
	outs, err := model.Run(ctx, models.ToRuntime(inputs))
	if err != nil {
		return nil, s.fail(ctx, "predict", fmt.Errorf("model %s:%d: %w", model.Version.Name, model.Version.Version, err))
	}
	resp := &servingv1.PredictResponse{Model: &servingv1.ModelRef{Name: model.Version.Name, Version: model.Version.Version}}
	if _, alias, ok := strings.Cut(msg.GetModel(), "@"); ok {
		resp.Model.Alias = alias
	}
	resp.Predictions = predictions(model.Version.Spec, outs, n)
	if s.predLog != nil {
		id, took := requestID(req.Header()), time.Since(start)
		mv := []predlog.ModelVersion{{Name: resp.Model.Name, Version: resp.Model.Version, Alias: resp.Model.Alias}}
		for i, inst := range msg.GetInstances() {
			s.predLog.Record(predlog.Record{
				RequestID: id, At: at, Method: predlog.MethodPredict, Models: mv, Entity: entityText(inst.GetEntities()),
				InputsDigest: predlog.Digest(rowOf(inputs, i)), EncodeOutputs: encoder(resp.Predictions[i]), Latency: took,
			})
		}
	}
	return connect.NewResponse(resp), nil
}

// rows gathers each instance's features, context and request values.
func (s *Server) rows(ctx context.Context, model *models.Model, instances []*servingv1.Instance, at time.Time) ([]assemble.Row, error) {
	rows := make([]assemble.Row, len(instances))
	refs := model.Plan.Refs
	var results [][]onlinestore.Result
	if len(refs) > 0 {
		var err error
		results, err = s.features.Get(ctx, s.defs(), refs, entityRows(instances))
		if err != nil {
			var ke *onlinestore.KeyError
			if errors.As(err, &ke) {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("instance %d: %s", ke.Row, strings.TrimPrefix(ke.Error(), fmt.Sprintf("entity row %d: ", ke.Row))))
			}
			return nil, s.fail(ctx, "predict", fmt.Errorf("online features: %w", err))
		}
	}
	var bare map[string]any
	var err error
	for i, inst := range instances {
		r := &rows[i]
		if results != nil {
			r.Features = make([]any, len(refs))
			for j := range refs {
				if res := &results[i][j]; res.Status == onlinestore.Present {
					r.Features[j] = res.Value()
				}
			}
		}
		r.Request = inst.GetValues()
		if len(inst.GetContext()) == 0 {
			// Instances without context of their own share the fields
			// derived from the request time.
			if bare == nil {
				if bare, err = assemble.DeriveContext(nil, at); err != nil {
					return nil, connect.NewError(connect.CodeInvalidArgument, err)
				}
			}
			r.Context = bare
			continue
		}
		given := make(map[string]any, len(inst.GetContext()))
		for k, v := range inst.GetContext() {
			given[k] = goValue(v)
		}
		if r.Context, err = assemble.DeriveContext(given, at); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("instance %d: %w", i, err))
		}
	}
	return rows, nil
}

// Predictions splits a model's outputs for n instances into one
// prediction each, labelled from spec, exactly as Predict answers.
func Predictions(spec *registry.Spec, outs []onnxrt.Tensor, n int) []*servingv1.Prediction {
	return predictions(spec, outs, n)
}

// predictions splits the outputs into one prediction per instance. The
// messages and their values come from a few slabs per response.
func predictions(spec *registry.Spec, outs []onnxrt.Tensor, n int) []*servingv1.Prediction {
	labels := map[string][]string{}
	for _, o := range spec.Outputs {
		labels[o.Name] = o.Labels
	}
	preds := make([]*servingv1.Prediction, n)
	predSlab := make([]servingv1.Prediction, n)
	outSlab := make([]servingv1.Output, n*len(outs))
	ptrSlab := make([]*servingv1.Output, n*len(outs))
	for i := range preds {
		preds[i] = &predSlab[i]
		preds[i].Outputs = ptrSlab[i*len(outs) : (i+1)*len(outs) : (i+1)*len(outs)]
	}
	for k, t := range outs {
		width := t.RowWidth()
		var values []float64
		switch {
		case t.Float32 != nil:
			values = make([]float64, len(t.Float32))
			for i, v := range t.Float32 {
				values[i] = float64(v)
			}
		case t.Float64 != nil:
			values = t.Float64
		case t.Int64 != nil:
			values = make([]float64, len(t.Int64))
			for i, v := range t.Int64 {
				values[i] = float64(v)
			}
		case t.Int32 != nil:
			values = make([]float64, len(t.Int32))
			for i, v := range t.Int32 {
				values[i] = float64(v)
			}
		case t.Bool != nil:
			values = make([]float64, len(t.Bool))
			for i, v := range t.Bool {
				values[i] = boolNum(v)
			}
		}
		for i := range n {
			o := &outSlab[i*len(outs)+k]
			o.Name = t.Name
			preds[i].Outputs[k] = o
			switch {
			case t.Maps != nil:
				m := t.Maps[i]
				keys := labels[t.Name]
				if len(keys) == 0 {
					for key := range m {
						keys = append(keys, key)
					}
					sort.Strings(keys)
				}
				for _, key := range keys {
					o.Values = append(o.Values, float64(m[key]))
				}
				o.Labels = keys
			case values != nil:
				o.Values = values[i*width : (i+1)*width : (i+1)*width]
			case t.Strings != nil:
				o.Strings = slices.Clone(t.Strings[i*width : (i+1)*width])
			}
			if o.Labels == nil && len(labels[t.Name]) == len(o.Values) {
				o.Labels = labels[t.Name]
			}
		}
	}
	return preds
}

func boolNum(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// rowOf is row i of batch tensors.
func rowOf(ts []assemble.Tensor, i int) []assemble.Tensor {
	out := make([]assemble.Tensor, len(ts))
	for j, t := range ts {
		w := int(t.Shape[1])
		r := assemble.Tensor{Name: t.Name, Shape: []int64{1, t.Shape[1]}}
		switch {
		case t.Float32 != nil:
			r.Float32 = t.Float32[i*w : (i+1)*w]
		case t.Float64 != nil:
			r.Float64 = t.Float64[i*w : (i+1)*w]
		case t.Int64 != nil:
			r.Int64 = t.Int64[i*w : (i+1)*w]
		case t.Int32 != nil:
			r.Int32 = t.Int32[i*w : (i+1)*w]
		}
		out[j] = r
	}
	return out
}

// entityRows reads join keys from the instances.
type entityRows []*servingv1.Instance

func (r entityRows) Len() int { return len(r) }

func (r entityRows) JoinKey(i int, key string) (onlinestore.KeyValue, bool) {
	return featureserver.KeyValue(r[i].GetEntities()[key])
}

// goValue converts a context value.
func goValue(v *featurestorev1.Value) any {
	switch x := v.GetKind().(type) {
	case *featurestorev1.Value_StringValue:
		return x.StringValue
	case *featurestorev1.Value_Int64Value:
		return x.Int64Value
	case *featurestorev1.Value_Int32Value:
		return int64(x.Int32Value)
	case *featurestorev1.Value_Float64Value:
		return x.Float64Value
	case *featurestorev1.Value_Float32Value:
		return float64(x.Float32Value)
	case *featurestorev1.Value_BoolValue:
		return x.BoolValue
	case *featurestorev1.Value_TimestampValue:
		return x.TimestampValue.AsTime()
	}
	return nil
}

// modelError maps a failure to get a model to its code: NotFound for a
// reference that names nothing, FailedPrecondition for an archived
// version or one that does not load, InvalidArgument for a malformed
// reference, and the registry's own failures by their class.
func modelError(ctx context.Context, ref string, err error) error {
	if models.IsNotFound(err) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("model %s: %w", ref, err))
	}
	return rpcerr.Error(ctx, fmt.Errorf("model %s: %w", ref, err))
}

// fail maps a failure of a request to its code, logging the server's own
// faults (Internal) with their full text.
func (s *Server) fail(ctx context.Context, what string, err error) error {
	ce := rpcerr.Error(ctx, err)
	if ce.Code() == connect.CodeInternal {
		s.log.Error(what+" failed", "err", err)
	}
	return ce
}

// requestTime reads a request's time (now when unset), refusing instants
// no feature can be stored at.
func requestTime(ts *timestamppb.Timestamp, now func() time.Time) (time.Time, error) {
	if ts == nil {
		return now(), nil
	}
	if err := featureserver.CheckTimestamp(ts); err != nil {
		return time.Time{}, fmt.Errorf("request_time: %w", err)
	}
	return ts.AsTime(), nil
}
