package featureserver

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/materialize"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// progressInterval spaces the progress messages of a Materialize stream.
const progressInterval = 250 * time.Millisecond

// Materialize loads the latest rows of the requested views into this
// server's online tier, streaming progress, and records watermarks for
// incremental runs.
func (s *Server) Materialize(ctx context.Context, req *connect.Request[featurestorev1.MaterializeRequest], stream *connect.ServerStream[featurestorev1.MaterializeResponse]) error {
	msg := req.Msg
	opt := materialize.Options{Views: msg.GetFeatureViews(), Incremental: msg.GetIncremental(), RecordWatermarks: true}
	if msg.GetStart() != nil {
		opt.Start = msg.GetStart().AsTime()
	}
	if msg.GetEnd() != nil {
		opt.End = msg.GetEnd().AsTime()
	}
	if !opt.Start.IsZero() && !opt.End.IsZero() && opt.End.Before(opt.Start) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("end %s is before start %s", opt.End.Format(time.RFC3339), opt.Start.Format(time.RFC3339)))
	}
	var sendErr error
	last := time.Now()
	opt.Progress = func(p materialize.Progress) {
		if sendErr != nil || p.Done || time.Since(last) < progressInterval {
			return
		}
		last = time.Now()
		sendErr = stream.Send(&featurestorev1.MaterializeResponse{Views: []*featurestorev1.MaterializedView{{FeatureView: p.View, Keys: p.Keys}}})
	}
	av := s.defs.Load()
	start := time.Now()
	results, err := materialize.Run(ctx, s.store, av.Repo, s.online, opt)
	if err != nil {
		return rpcerr.Error(ctx, err)
	}
	if sendErr != nil {
		return sendErr
	}
	out := &featurestorev1.MaterializeResponse{Done: true}
	var keys int64
	for _, r := range results {
		keys += r.Keys
		out.Views = append(out.Views, &featurestorev1.MaterializedView{
			FeatureView: r.View, Keys: r.Keys, Watermark: timestamppb.New(r.Watermark),
			Incremental: r.Incremental, Done: true, Duration: durationpb.New(r.Duration),
		})
	}
	s.log.Info("materialized", "views", len(results), "keys", keys, "incremental", opt.Incremental, "duration", time.Since(start))
	return stream.Send(out)
}
