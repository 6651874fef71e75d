package materialize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// Refresher updates cached rows with newer ones, leaving keys it does not
// hold alone.
type Refresher interface {
	Refresh(v *definitions.FeatureView, r offline.LatestRow) (bool, error)
}

// Follower keeps a tier in step with the rows other processes store (a
// replica's pushes, an ingest): each poll reads, per view, the latest of
// the rows stored since the previous poll and refreshes the keys the tier
// holds. Keys it does not hold are read through when asked for.
type Follower struct {
	store *offline.Store
	repo  func() *definitions.Repo
	sink  Refresher
	log   *slog.Logger

	mu        sync.Mutex
	from      time.Time            // where views first seen start
	since     map[string]time.Time // view -> next poll's insertion-time bound
	untracked map[string]bool      // views without insertion times, logged once

	polls     *prometheus.CounterVec
	refreshed prometheus.Counter
	lastPoll  prometheus.Gauge
}

// NewFollower returns a follower of the views repo returns (called on every
// poll, so newly applied views are followed) into sink.
func NewFollower(store *offline.Store, repo func() *definitions.Repo, sink Refresher, log *slog.Logger) *Follower {
	if log == nil {
		log = slog.Default()
	}
	return &Follower{
		store: store, repo: repo, sink: sink, log: log,
		since: map[string]time.Time{}, untracked: map[string]bool{},
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailor_online_follow_polls_total", Help: "Polls for rows stored by other processes, by result.",
		}, []string{"result"}),
		refreshed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailor_online_follow_refreshed_total", Help: "Cached rows replaced by newer rows stored by other processes.",
		}),
		lastPoll: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailor_online_follow_last_poll_timestamp_seconds", Help: "When the last successful poll began (ClickHouse clock).",
		}),
	}
}

// Register exports the follower's metrics to reg.
func (f *Follower) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{f.polls, f.refreshed, f.lastPoll} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Start sets the instant rows are followed from; call it before a warm
// start so nothing stored while the tier fills is missed. Without it the
// first poll starts from its own time.
func (f *Follower) Start(ctx context.Context) error {
	now, err := f.store.Now(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.from = now.Add(-overlap)
	f.mu.Unlock()
	return nil
}

// Run polls every interval until ctx is done. A failed poll is logged and
// retried from the same bound, so an outage delays rows, never loses them.
func (f *Follower) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.Poll(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("follow stored rows", "err", err)
		}
	}
}

// Poll refreshes the tier once with the rows stored since the last poll.
func (f *Follower) Poll(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now, err := f.store.Now(ctx)
	if err != nil {
		f.polls.WithLabelValues("error").Inc()
		return err
	}
	if f.from.IsZero() {
		f.from = now.Add(-overlap)
	}
	repo := f.repo()
	var errs []error
	for i := range repo.FeatureViews {
		v := &repo.FeatureViews[i]
		if f.untracked[v.Name] {
			continue
		}
		since, ok := f.since[v.Name]
		if !ok {
			since = f.from
		}
		_, err := f.store.ScanLatest(ctx, repo, v, offline.ScanOptions{At: now, RowsStoredSince: since}, func(r offline.LatestRow) error {
			changed, err := f.sink.Refresh(v, r)
			if changed {
				f.refreshed.Inc()
			}
			return err
		})
		switch {
		case errors.Is(err, offline.ErrNoInsertionTime):
			f.untracked[v.Name] = true
			f.log.Warn("view not followed: its table has no insertion times; cached rows change only through this server", "view", v.Name, "err", err)
		case err != nil:
			errs = append(errs, fmt.Errorf("follow %s: %w", v.Name, err))
		default:
			// A row is stamped before its insert commits: look back.
			f.since[v.Name] = now.Add(-followOverlap)
		}
	}
	if len(errs) > 0 {
		f.polls.WithLabelValues("error").Inc()
		return errors.Join(errs...)
	}
	f.polls.WithLabelValues("ok").Inc()
	f.lastPoll.Set(float64(now.Unix()))
	return nil
}

// followOverlap is how far each poll looks back past the previous one.
const followOverlap = 2 * time.Second
