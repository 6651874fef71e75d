// Package registryserver implements the Connect RegistryService over the
// model registry.
package registryserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	registryv1 "github.com/tailorhq/tailor/proto/gen/tailor/registry/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/registry/v1/registryv1connect"
	"github.com/tailorhq/tailor/registry"
)

// DefaultMaxModelBytes bounds an upload unless Options say otherwise.
const DefaultMaxModelBytes = 2 << 30

// Server is the RegistryService handler.
type Server struct {
	registryv1connect.UnimplementedRegistryServiceHandler

	store    *registry.Store
	defs     func() *definitions.Repo
	log      *slog.Logger
	maxBytes int64
}

// New returns the handler; defs returns the applied definitions model
// metadata is checked against.
func New(store *registry.Store, defs func() *definitions.Repo, maxModelBytes int64, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if maxModelBytes <= 0 {
		maxModelBytes = DefaultMaxModelBytes
	}
	return &Server{store: store, defs: defs, log: log, maxBytes: maxModelBytes}
}

// RegisterModel receives the metadata, then the model's bytes, validates
// them and stores a version.
func (s *Server) RegisterModel(ctx context.Context, stream *connect.ClientStream[registryv1.RegisterModelRequest]) (*connect.Response[registryv1.RegisterModelResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty upload: send the metadata, then the model's bytes"))
	}
	meta := stream.Msg().GetMetadata()
	if meta == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first message of an upload must carry the metadata (model.yaml)"))
	}
	var model []byte
	for stream.Receive() {
		chunk := stream.Msg().GetChunk()
		if stream.Msg().GetMetadata() != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("metadata given twice: only the first message carries it"))
		}
		if int64(len(model)+len(chunk)) > s.maxBytes {
			return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the model is over %d bytes, the server's limit", s.maxBytes))
		}
		model = append(model, chunk...)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	actor := meta.GetActor()
	if actor == "" {
		actor = stream.Peer().Addr
	}
	file := meta.GetSpecFile()
	if file == "" {
		file = "model.yaml"
	}
	v, existing, err := s.store.Register(ctx, file, []byte(meta.GetSpecYaml()), model, s.defs(), actor)
	if err != nil {
		return nil, code(ctx, err)
	}
	return connect.NewResponse(&registryv1.RegisterModelResponse{Version: VersionProto(v), Existing: existing}), nil
}

// ListModels lists every model's latest version.
func (s *Server) ListModels(ctx context.Context, _ *connect.Request[registryv1.ListModelsRequest]) (*connect.Response[registryv1.ListModelsResponse], error) {
	vs, err := s.store.Models(ctx)
	if err != nil {
		return nil, code(ctx, err)
	}
	out := &registryv1.ListModelsResponse{}
	for _, v := range vs {
		out.Models = append(out.Models, VersionProto(v))
	}
	return connect.NewResponse(out), nil
}

// GetModel describes a model: versions, aliases, audit trail.
func (s *Server) GetModel(ctx context.Context, req *connect.Request[registryv1.GetModelRequest]) (*connect.Response[registryv1.GetModelResponse], error) {
	name := req.Msg.GetName()
	vs, err := s.store.Versions(ctx, name)
	if err != nil {
		return nil, code(ctx, err)
	}
	events, err := s.store.Events(ctx, name)
	if err != nil {
		return nil, code(ctx, err)
	}
	out := &registryv1.GetModelResponse{Aliases: map[string]int64{}}
	for _, v := range vs {
		out.Versions = append(out.Versions, VersionProto(v))
		for _, a := range v.Aliases {
			out.Aliases[a] = v.Version
		}
	}
	for _, e := range events {
		out.Audit = append(out.Audit, &registryv1.AuditEvent{
			At: timestamppb.New(e.At), Actor: e.Actor, Action: e.Action, Version: e.Version,
			Alias: e.Alias, PreviousVersion: e.Previous, Reason: e.Reason,
		})
	}
	return connect.NewResponse(out), nil
}

// SetAlias moves an alias.
func (s *Server) SetAlias(ctx context.Context, req *connect.Request[registryv1.SetAliasRequest]) (*connect.Response[registryv1.SetAliasResponse], error) {
	m := req.Msg
	actor := m.GetActor()
	if actor == "" {
		actor = req.Peer().Addr
	}
	prev, err := s.store.SetAlias(ctx, m.GetName(), m.GetAlias(), m.GetVersion(), actor, m.GetReason())
	if err != nil {
		return nil, code(ctx, err)
	}
	return connect.NewResponse(&registryv1.SetAliasResponse{PreviousVersion: prev}), nil
}

// ArchiveVersion archives or restores a version.
func (s *Server) ArchiveVersion(ctx context.Context, req *connect.Request[registryv1.ArchiveVersionRequest]) (*connect.Response[registryv1.ArchiveVersionResponse], error) {
	m := req.Msg
	actor := m.GetActor()
	if actor == "" {
		actor = req.Peer().Addr
	}
	if err := s.store.Archive(ctx, m.GetName(), m.GetVersion(), m.GetArchived(), actor, m.GetReason()); err != nil {
		return nil, code(ctx, err)
	}
	return connect.NewResponse(&registryv1.ArchiveVersionResponse{}), nil
}

// code maps registry errors to Connect codes (see featurestore/rpcerr).
func code(ctx context.Context, err error) error { return rpcerr.Error(ctx, err) }

// VersionProto converts a version to its protobuf form.
func VersionProto(v *registry.Version) *registryv1.ModelVersion {
	out := &registryv1.ModelVersion{
		Name: v.Name, Version: v.Version, Sha256: v.SHA256, SizeBytes: v.Size,
		CreatedAt: timestamppb.New(v.CreatedAt), CreatedBy: v.CreatedBy, Archived: v.Archived,
		Aliases: v.Aliases, SpecYaml: v.SpecYAML,
	}
	if sp := v.Spec; sp != nil {
		out.Task, out.Description, out.Metrics, out.Tags, out.Lineage = sp.Task, sp.Description, sp.Metrics, sp.Tags, sp.Lineage
		for i := range sp.Inputs {
			in := &sp.Inputs[i]
			ts := &registryv1.TensorSpec{Name: in.Name, ElementType: in.Type, Shape: []int64{-1, int64(in.Width())}}
			for j := range in.Elements {
				ts.Sources = append(ts.Sources, in.Elements[j].Source())
			}
			out.Inputs = append(out.Inputs, ts)
		}
		for _, o := range sp.Outputs {
			out.Outputs = append(out.Outputs, &registryv1.TensorSpec{Name: o.Name, Labels: o.Labels})
		}
	}
	return out
}
