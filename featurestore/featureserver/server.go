// Package featureserver implements the Connect FeatureService over the
// feature store: the applied definitions, held as an immutable snapshot
// that is swapped when a newer version is applied, so the read path takes
// no lock and requests in flight finish on the snapshot they started with.
package featureserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

// Server is the FeatureService handler.
type Server struct {
	featurestorev1connect.UnimplementedFeatureServiceHandler

	store   *offline.Store
	online  *onlinestore.Store
	log     *slog.Logger
	defs    atomic.Pointer[snapshot]
	reloads *prometheus.CounterVec
}

// New loads the applied definitions (none is fine) and returns the server.
func New(ctx context.Context, store *offline.Store, online *onlinestore.Store, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{store: store, online: online, log: log, reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailor_definitions_reloads_total", Help: "Definition reloads, by result.",
	}, []string{"result"})}
	if reg != nil {
		reg.MustRegister(s.reloads)
	}
	av, err := store.Applied(ctx)
	if err != nil {
		return nil, err
	}
	if av == nil {
		av = &offline.AppliedVersion{Repo: &definitions.Repo{}}
	}
	s.defs.Store(newSnapshot(av))
	return s, nil
}

// Definitions returns the snapshot serving requests now.
func (s *Server) Definitions() *offline.AppliedVersion { return s.defs.Load().AppliedVersion }

// snapshot is one applied version with what requests derive from it
// prepared once: the feature services' resolved references.
type snapshot struct {
	*offline.AppliedVersion
	services map[string][]definitions.FeatureRef
}

func newSnapshot(av *offline.AppliedVersion) *snapshot {
	s := &snapshot{AppliedVersion: av, services: map[string][]definitions.FeatureRef{}}
	for _, fs := range av.Repo.FeatureServices {
		// A service that does not resolve is left out; asking for it
		// resolves it again and reports the error.
		if refs, err := av.Repo.ResolveService(fs.Name); err == nil {
			s.services[fs.Name] = refs
		}
	}
	return s
}

// resolveService returns the references of a feature service.
func (s *snapshot) resolveService(name string) ([]definitions.FeatureRef, error) {
	if refs, ok := s.services[name]; ok {
		return refs, nil
	}
	return s.Repo.ResolveService(name)
}

// WatchDefinitions polls for newer applied definitions every interval until
// ctx is done. A new version is loaded fully, then swapped in; a failed
// load keeps the old snapshot, logs, and counts the failure.
func (s *Server) WatchDefinitions(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.reload(ctx); err != nil && ctx.Err() == nil {
			s.reloads.WithLabelValues("error").Inc()
			s.log.Warn("reload definitions", "err", err)
		}
	}
}

func (s *Server) reload(ctx context.Context) error {
	v, err := s.store.LatestVersion(ctx)
	if err != nil || v == s.defs.Load().Version {
		return err
	}
	av, err := s.store.Applied(ctx)
	if err != nil {
		return err
	}
	if av == nil {
		return errors.New("definitions vanished")
	}
	s.defs.Store(newSnapshot(av))
	s.reloads.WithLabelValues("ok").Inc()
	s.log.Info("definitions reloaded", "version", av.Version)
	return nil
}

// ListFeatureViews lists the applied views in definition order.
func (s *Server) ListFeatureViews(_ context.Context, _ *connect.Request[featurestorev1.ListFeatureViewsRequest]) (*connect.Response[featurestorev1.ListFeatureViewsResponse], error) {
	av := s.defs.Load()
	out := &featurestorev1.ListFeatureViewsResponse{DefinitionsVersion: av.Version}
	for i := range av.Repo.FeatureViews {
		out.FeatureViews = append(out.FeatureViews, s.viewProto(av.Repo, &av.Repo.FeatureViews[i]))
	}
	return connect.NewResponse(out), nil
}

// GetFeatureView describes one view; an unknown name is NotFound.
func (s *Server) GetFeatureView(_ context.Context, req *connect.Request[featurestorev1.GetFeatureViewRequest]) (*connect.Response[featurestorev1.GetFeatureViewResponse], error) {
	av := s.defs.Load()
	v, ok := av.Repo.View(req.Msg.GetName())
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown feature view %q", req.Msg.GetName()))
	}
	return connect.NewResponse(&featurestorev1.GetFeatureViewResponse{FeatureView: s.viewProto(av.Repo, v)}), nil
}

// ListFeatureServices lists the applied feature services.
func (s *Server) ListFeatureServices(_ context.Context, _ *connect.Request[featurestorev1.ListFeatureServicesRequest]) (*connect.Response[featurestorev1.ListFeatureServicesResponse], error) {
	av := s.defs.Load()
	out := &featurestorev1.ListFeatureServicesResponse{}
	for _, fs := range av.Repo.FeatureServices {
		out.FeatureServices = append(out.FeatureServices, &featurestorev1.FeatureServiceDefinition{
			Name: fs.Name, FeatureRefs: fs.Features, Description: fs.Description,
		})
	}
	return connect.NewResponse(out), nil
}

func (s *Server) viewProto(repo *definitions.Repo, v *definitions.FeatureView) *featurestorev1.FeatureView {
	out := &featurestorev1.FeatureView{
		Name: v.Name, Ttl: durationpb.New(v.TTL), Tags: v.Tags, Description: v.Description, Table: s.store.TableOf(v),
		TimestampField: v.Source.TimestampField, CreatedTimestampField: v.Source.CreatedTimestampField,
	}
	for _, e := range repo.JoinKeys(v) {
		out.Entities = append(out.Entities, &featurestorev1.Entity{Name: e.Name, JoinKey: e.JoinKey, Type: ValueType(e.Type), Description: e.Description})
	}
	for _, f := range v.Features {
		out.Features = append(out.Features, &featurestorev1.Feature{Name: f.Name, Type: ValueType(f.Type), Description: f.Description})
	}
	return out
}

// ValueType maps a definitions type to its protobuf enum.
func ValueType(t definitions.ValueType) featurestorev1.ValueType {
	switch t {
	case definitions.Int32:
		return featurestorev1.ValueType_VALUE_TYPE_INT32
	case definitions.Int64:
		return featurestorev1.ValueType_VALUE_TYPE_INT64
	case definitions.Float32:
		return featurestorev1.ValueType_VALUE_TYPE_FLOAT32
	case definitions.Float64:
		return featurestorev1.ValueType_VALUE_TYPE_FLOAT64
	case definitions.String:
		return featurestorev1.ValueType_VALUE_TYPE_STRING
	case definitions.Bool:
		return featurestorev1.ValueType_VALUE_TYPE_BOOL
	case definitions.Timestamp:
		return featurestorev1.ValueType_VALUE_TYPE_TIMESTAMP
	case definitions.ArrayFloat32:
		return featurestorev1.ValueType_VALUE_TYPE_ARRAY_FLOAT32
	case definitions.ArrayInt64:
		return featurestorev1.ValueType_VALUE_TYPE_ARRAY_INT64
	case definitions.ArrayString:
		return featurestorev1.ValueType_VALUE_TYPE_ARRAY_STRING
	}
	return featurestorev1.ValueType_VALUE_TYPE_UNSPECIFIED
}

// DefinitionType maps a protobuf value type back to the definitions type
// ("" for unspecified).
func DefinitionType(t featurestorev1.ValueType) definitions.ValueType {
	for _, d := range definitions.FeatureTypes {
		if ValueType(d) == t {
			return d
		}
	}
	return ""
}
