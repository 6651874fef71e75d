// Package modelcheck shows a model's inputs before the model is
// registered: for entities a running server knows, it assembles the input
// tensors with serving's own code (assemble.Plan.Explain) from the
// server's online features (GetOnlineFeatures, the very answer serving
// would use), request context and request values, says where every
// position's number comes from, and runs the model on those tensors with
// ONNX Runtime. The metadata is first validated against the model's
// graph and the server's definitions as registration does.
package modelcheck

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/featureserver"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/serving/predictserver"
)

// Features is what a check needs of a server's FeatureService (a
// featurestorev1connect.FeatureServiceClient is one).
type Features interface {
	ListFeatureViews(context.Context, *connect.Request[featurestorev1.ListFeatureViewsRequest]) (*connect.Response[featurestorev1.ListFeatureViewsResponse], error)
	GetOnlineFeatures(context.Context, *connect.Request[featurestorev1.GetOnlineFeaturesRequest]) (*connect.Response[featurestorev1.GetOnlineFeaturesResponse], error)
}

// Request is a model to check and the instances to feed it.
type Request struct {
	// SpecFile names the metadata in error positions; SpecYAML is its
	// text and Model the ONNX bytes.
	SpecFile string
	SpecYAML []byte
	Model    []byte
	// Entities are the instances, one map each: join key -> value as
	// text (an integer key in decimal). None is one instance without
	// entities, for a model that reads no features.
	Entities []map[string]string
	// Context is every instance's request context (device, timezone,
	// any name the metadata reads), as text, as clients send it.
	Context map[string]string
	// Values are every instance's request values.
	Values map[string]float64
	// At is the request time hour_of_day and day_of_week derive from.
	At time.Time
}

// Report is what the model is fed and what it answers.
type Report struct {
	Spec *registry.Spec
	// DefinitionsVersion is the version of the server's definitions the
	// metadata was checked against.
	DefinitionsVersion uint64
	At                 time.Time
	Instances          []Instance
}

// Instance is one entity's inputs, explained, and the model's outputs.
type Instance struct {
	Entity  map[string]string
	Inputs  []assemble.Input
	Outputs []*servingv1.Output
}

// RequestError is an instance the check cannot assemble: a bad or
// missing join key, a context field or request value the model does not
// read, an unknown time zone.
type RequestError struct {
	// Field is what is wrong: FieldEntity, FieldContext or FieldValue.
	Field string
	Err   error
}

// The fields of a request a RequestError points at.
const (
	FieldEntity  = "entity"
	FieldContext = "context"
	FieldValue   = "value"
)

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// Check validates the metadata against the model and the server's
// definitions (an *registry.InvalidError lists every mismatch), then
// assembles, explains and runs each instance.
func Check(ctx context.Context, features Features, req Request) (*Report, error) {
	repo, version, err := Definitions(ctx, features)
	if err != nil {
		return nil, err
	}
	spec, err := registry.ValidateModel(req.SpecFile, req.SpecYAML, req.Model, repo, registry.InspectONNX)
	if err != nil {
		return nil, err
	}
	plan, err := assemble.Compile(spec, repo)
	if err != nil {
		return nil, &registry.InvalidError{Err: err}
	}
	if err := checkNames(spec.Name, plan, req.Context, req.Values); err != nil {
		return nil, err
	}
	given := make(map[string]any, len(req.Context))
	for k, v := range req.Context {
		given[k] = v
	}
	derived, err := assemble.DeriveContext(given, req.At)
	if err != nil {
		return nil, &RequestError{FieldContext, err}
	}
	entities := req.Entities
	if len(entities) == 0 {
		entities = []map[string]string{{}}
	}
	keys, err := entityRows(repo, plan, entities)
	if err != nil {
		return nil, &RequestError{FieldEntity, err}
	}
	rows, status, err := fetch(ctx, features, plan, keys)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].Context, rows[i].Request = derived, req.Values
	}
	tensors, explained := plan.Explain(rows, status)
	outs, err := run(ctx, spec, req.Model, tensors)
	if err != nil {
		return nil, err
	}
	preds := predictserver.Predictions(spec, outs, len(rows))
	rep := &Report{Spec: spec, DefinitionsVersion: version, At: req.At}
	for i := range rows {
		rep.Instances = append(rep.Instances, Instance{Entity: req.entity(i), Inputs: explained[i], Outputs: preds[i].GetOutputs()})
	}
	return rep, nil
}

func (r *Request) entity(i int) map[string]string {
	if i < len(r.Entities) {
		return r.Entities[i]
	}
	return nil
}

// run runs the model once on the assembled tensors.
func run(ctx context.Context, spec *registry.Spec, model []byte, tensors []assemble.Tensor) ([]onnxrt.Tensor, error) {
	// One intra-op thread: a check runs a handful of rows.
	sess, err := onnxrt.NewSession(model, onnxrt.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	defer sess.Close()
	outs, err := sess.Run(ctx, models.ToRuntime(tensors))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	return outs, nil
}

// fetch asks the server for the plan's features of each entity row and
// lays them out as assemble rows, with the status of each value.
func fetch(ctx context.Context, features Features, plan *assemble.Plan, keys []*featurestorev1.EntityRow) ([]assemble.Row, [][]assemble.Status, error) {
	rows := make([]assemble.Row, len(keys))
	status := make([][]assemble.Status, len(keys))
	if len(plan.Refs) == 0 {
		return rows, status, nil
	}
	refs := make([]string, len(plan.Refs))
	for i, r := range plan.Refs {
		refs[i] = r.String()
	}
	resp, err := features.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: refs}},
		Entities: keys,
	}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return nil, nil, &RequestError{FieldEntity, fmt.Errorf("online features: %w", err)}
		}
		return nil, nil, fmt.Errorf("online features: %w", err)
	}
	if got := resp.Msg.GetRows(); len(got) != len(keys) {
		return nil, nil, fmt.Errorf("online features: %d rows answered for %d entities", len(got), len(keys))
	}
	for i, row := range resp.Msg.GetRows() {
		vals := row.GetValues()
		if len(vals) != len(refs) {
			return nil, nil, fmt.Errorf("online features: %d values answered for %d features", len(vals), len(refs))
		}
		rows[i].Features = make([]any, len(refs))
		status[i] = make([]assemble.Status, len(refs))
		for j, fv := range vals {
			status[i][j] = statusOf(fv.GetStatus())
			// Serving reads a value only when it is present, as here.
			if status[i][j] == assemble.StatusPresent {
				rows[i].Features[j] = goValue(fv.GetValue())
			}
		}
	}
	return rows, status, nil
}

func statusOf(s featurestorev1.FeatureStatus) assemble.Status {
	switch s {
	case featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT:
		return assemble.StatusPresent
	case featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND:
		return assemble.StatusNotFound
	case featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE:
		return assemble.StatusOutsideMaxAge
	}
	return assemble.StatusMissing
}

// goValue converts a feature value from its protobuf form to the Go form
// serving assembles from (onlinestore.Result.Value's types); nil for
// null.
func goValue(v *featurestorev1.Value) any {
	switch x := v.GetKind().(type) {
	case *featurestorev1.Value_Int32Value:
		return x.Int32Value
	case *featurestorev1.Value_Int64Value:
		return x.Int64Value
	case *featurestorev1.Value_Float32Value:
		return x.Float32Value
	case *featurestorev1.Value_Float64Value:
		return x.Float64Value
	case *featurestorev1.Value_StringValue:
		return x.StringValue
	case *featurestorev1.Value_BoolValue:
		return x.BoolValue
	case *featurestorev1.Value_TimestampValue:
		return x.TimestampValue.AsTime()
	case *featurestorev1.Value_Float32ListValue:
		return x.Float32ListValue.GetValues()
	case *featurestorev1.Value_Int64ListValue:
		return x.Int64ListValue.GetValues()
	case *featurestorev1.Value_StringListValue:
		return x.StringListValue.GetValues()
	}
	return nil
}

// Definitions reads the server's applied feature views into a
// definitions repository (entities and typed features, enough to resolve
// and check a model's feature references) and its version.
func Definitions(ctx context.Context, features Features) (*definitions.Repo, uint64, error) {
	resp, err := features.ListFeatureViews(ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{}))
	if err != nil {
		return nil, 0, fmt.Errorf("definitions: %w", err)
	}
	repo := &definitions.Repo{}
	seen := map[string]bool{}
	for _, v := range resp.Msg.GetFeatureViews() {
		fv := definitions.FeatureView{Name: v.GetName(), TTL: v.GetTtl().AsDuration(), Description: v.GetDescription(), Tags: v.GetTags()}
		for _, e := range v.GetEntities() {
			fv.Entities = append(fv.Entities, e.GetName())
			if !seen[e.GetName()] {
				seen[e.GetName()] = true
				repo.Entities = append(repo.Entities, definitions.Entity{Name: e.GetName(), JoinKey: e.GetJoinKey(), Type: featureserver.DefinitionType(e.GetType()), Description: e.GetDescription()})
			}
		}
		for _, f := range v.GetFeatures() {
			fv.Features = append(fv.Features, definitions.Feature{Name: f.GetName(), Type: featureserver.DefinitionType(f.GetType()), Description: f.GetDescription()})
		}
		repo.FeatureViews = append(repo.FeatureViews, fv)
	}
	return repo, resp.Msg.GetDefinitionsVersion(), nil
}
