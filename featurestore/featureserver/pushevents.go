package featureserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// pushEvents stores pushed rows of a windowed view as events in its event
// table (each row's values name the table's columns; its event timestamp
// fills the view's timestamp column), then recomputes the aggregates of
// the keys the online tier holds, so the next read sees the events.
func (s *Server) pushEvents(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, rows []*featurestorev1.PushRow, plan *pushPlan) (*connect.Response[featurestorev1.PushResponse], error) {
	now := plan.now
	ents := repo.JoinKeys(v)
	events := make([]offline.Event, len(rows))
	keys := make([][]any, 0, len(rows))
	seen := map[string]bool{}
	for i, r := range rows {
		ev := offline.Event{}
		for name, val := range r.GetValues() {
			if name == v.Source.TimestampField {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: give the time of the event as event_timestamp, not as %q", i, name))
			}
			x, err := eventValue(val)
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: %q: %w", i, name, err))
			}
			ev[name] = x
		}
		ts := r.GetEventTimestamp()
		if ts == nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: no event_timestamp", i))
		}
		if err := CheckTimestamp(ts); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: event_timestamp: %w", i, err))
		}
		at := ts.AsTime()
		if at.After(now.Add(MaxClockSkew)) {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: event_timestamp %s is ahead of the server clock by more than %s", i, at.Format(time.RFC3339), MaxClockSkew))
		}
		ev[v.Source.TimestampField] = at.Truncate(time.Second)
		key := make([]any, len(ents))
		for j, e := range ents {
			kv, err := goValue(joinKeyValue(r.GetValues()[e.JoinKey], e.Type), e.Type)
			if err != nil || kv == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("row %d: join key %q: %v", i, e.JoinKey, errOrMissing(err)))
			}
			key[j], ev[e.JoinKey] = kv, kv
		}
		if id := fmt.Sprint(key); !seen[id] {
			seen[id] = true
			keys = append(keys, key)
		}
		events[i] = ev
	}
	batch, err := s.store.PrepareEvents(ctx, repo, v, events)
	if err != nil {
		return nil, rpcerr.Error(ctx, err)
	}
	insert := func() error { return s.store.InsertEventBatch(ctx, batch) }
	stored := func() (uint64, error) {
		return s.store.StoredRows(ctx, batch.Table, batch.Columns, batch.Rows, plan.since())
	}
	replayed, err := s.storeOnce(ctx, plan, v.Name, len(rows), insert, stored)
	if err != nil {
		return nil, rpcerr.Error(ctx, err)
	}
	// The events are stored: recompute the keys' aggregates for the tier.
	// A failure here only delays freshness (the follower retries), so the
	// push still succeeds.
	latest, err := s.store.Latest(ctx, repo, v, keys, time.Now())
	if err != nil {
		s.log.Warn("recompute pushed keys", "view", v.Name, "err", err)
	}
	for _, r := range latest {
		if _, err := s.online.Refresh(v, r); err != nil {
			s.log.Warn("online tier", "view", v.Name, "err", err)
		}
	}
	return connect.NewResponse(&featurestorev1.PushResponse{RowsStored: int64(len(rows)), Replayed: replayed}), nil
}

// eventValue reads a pushed value for an event column.
func eventValue(v *featurestorev1.Value) (any, error) {
	switch k := v.GetKind().(type) {
	case nil:
		return nil, nil
	case *featurestorev1.Value_Int32Value:
		return int64(k.Int32Value), nil
	case *featurestorev1.Value_Int64Value:
		return k.Int64Value, nil
	case *featurestorev1.Value_Float32Value:
		return float64(k.Float32Value), nil
	case *featurestorev1.Value_Float64Value:
		return k.Float64Value, nil
	case *featurestorev1.Value_StringValue:
		return k.StringValue, nil
	case *featurestorev1.Value_BoolValue:
		return k.BoolValue, nil
	case *featurestorev1.Value_TimestampValue:
		if err := CheckTimestamp(k.TimestampValue); err != nil {
			return nil, err
		}
		return k.TimestampValue.AsTime(), nil
	}
	return nil, errors.New("lists cannot go into an event column")
}
