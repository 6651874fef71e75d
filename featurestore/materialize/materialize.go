// Package materialize loads the latest feature rows from the offline store
// into an online tier: whole views or event-time windows on demand, only
// the keys changed since the last run (incremental, from watermarks kept in
// ClickHouse), a warm start up to a memory budget, and a follower that
// keeps a tier in step with rows other processes store.
package materialize

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// Sink receives the latest rows a run loads.
type Sink interface {
	// Load caches r as the latest row of its key in v (a newer cached row
	// wins).
	Load(v *definitions.FeatureView, r offline.LatestRow) error
}

// Options selects what Run loads.
type Options struct {
	// Views to load, by name; empty means every view.
	Views []string
	// Start and End, when set, load only the keys whose latest row has an
	// event time in [Start, End] (see offline.ScanOptions).
	Start, End time.Time
	// Incremental loads only the keys with rows stored since the view's
	// last recorded run; a view never materialized is loaded whole.
	Incremental bool
	// RecordWatermarks stores each view's watermark when it completes, for
	// later incremental runs.
	RecordWatermarks bool
	// Full, when set, is polled while loading; once it reports true the
	// run stops early (a warm start up to a memory budget) and the results
	// say so.
	Full func() bool
	// Progress, when set, is called with each view's running count.
	Progress func(Progress)
	// At is the instant whose latest rows are loaded (default: now, as
	// ClickHouse's clock says): the rows a point-in-time export at At
	// would give, for a tier whose reads judge time by the same instant.
	At time.Time
}

// Progress is how far a run has come in one view.
type Progress struct {
	View string
	// Keys loaded so far in this view.
	Keys int64
	// Done is set on the view's last report.
	Done bool
}

// Result reports one view of a finished run.
type Result struct {
	View string
	// Keys is the number of latest rows loaded.
	Keys int64
	// Watermark: every row stored before it is covered by this run; the
	// next incremental run starts from it.
	Watermark time.Time
	// Incremental says whether only keys changed since a watermark were
	// loaded.
	Incremental bool
	// Stopped says the run stopped early because the sink was full.
	Stopped  bool
	Duration time.Duration
}

// UnknownViewError names views a run was asked for that are not applied.
type UnknownViewError struct{ Views []string }

func (e *UnknownViewError) Error() string {
	return fmt.Sprintf("unknown feature view(s): %s", strings.Join(e.Views, ", "))
}

// InvalidInput marks an unknown view as the caller's mistake.
func (e *UnknownViewError) InvalidInput() bool { return true }

// overlap is how far before a run's start its watermark is set. Insertion
// times have one-second resolution and a row is stamped before its insert
// commits, so the next run revisits this margin; loading a row twice is
// harmless, missing one is not.
const overlap = 5 * time.Second

// progressEvery is how many keys pass between progress reports and checks
// of Full.
const progressEvery = 4096

// loadBatch is how many rows pass to the loading goroutine at once.
const loadBatch = 1024

// errFull stops a scan when the sink is full; errLoad when it failed.
var (
	errFull = errors.New("sink full")
	errLoad = errors.New("sink failed")
)

// Run loads the latest row per key of the selected views into sink, one
// view after another; a view's rows stream from ClickHouse in blocks, so
// memory does not grow with the number of keys.
func Run(ctx context.Context, store *offline.Store, repo *definitions.Repo, sink Sink, opt Options) ([]Result, error) {
	views, err := selectViews(repo, opt.Views)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, v := range views {
		if opt.Full != nil && opt.Full() {
			out = append(out, Result{View: v.Name, Stopped: true})
			continue
		}
		res, err := runView(ctx, store, repo, v, sink, opt)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

func selectViews(repo *definitions.Repo, names []string) ([]*definitions.FeatureView, error) {
	if len(names) == 0 {
		views := make([]*definitions.FeatureView, len(repo.FeatureViews))
		for i := range repo.FeatureViews {
			views[i] = &repo.FeatureViews[i]
		}
		return views, nil
	}
	var views []*definitions.FeatureView
	var unknown []string
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		v, ok := repo.View(n)
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%q", n))
			continue
		}
		views = append(views, v)
	}
	if len(unknown) > 0 {
		return nil, &UnknownViewError{Views: unknown}
	}
	return views, nil
}

func runView(ctx context.Context, store *offline.Store, repo *definitions.Repo, v *definitions.FeatureView, sink Sink, opt Options) (Result, error) {
	start := time.Now()
	now, err := store.Now(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{View: v.Name, Watermark: now.Add(-overlap)}
	at := now
	if !opt.At.IsZero() {
		at = opt.At
	}
	scan := offline.ScanOptions{At: at, Start: opt.Start, End: opt.End}
	if opt.Incremental {
		w, ok, err := store.LastWatermark(ctx, v.Name)
		if err != nil {
			return Result{}, err
		}
		if ok {
			scan.KeysStoredSince, res.Incremental = w.StoredBefore, true
		}
	}
	report := func(done bool) {
		if opt.Progress != nil {
			opt.Progress(Progress{View: v.Name, Keys: res.Keys, Done: done})
		}
	}
	// Rows are decoded on this goroutine and loaded into the sink on
	// another, in batches, so both sides of the copy run at once.
	batches := make(chan []offline.LatestRow, 4)
	loaded := make(chan error, 1)
	var failed atomic.Bool
	go func() {
		var err error
		for b := range batches {
			for _, r := range b {
				if err == nil {
					if err = sink.Load(v, r); err != nil {
						err = fmt.Errorf("load key %v: %w", r.Keys, err)
						failed.Store(true) // keep draining; the scan stops
					}
				}
			}
		}
		loaded <- err
	}()
	batch := make([]offline.LatestRow, 0, loadBatch)
	_, err = store.ScanLatest(ctx, repo, v, scan, func(r offline.LatestRow) error {
		batch = append(batch, r)
		res.Keys++
		if len(batch) == loadBatch {
			batches <- batch
			batch = make([]offline.LatestRow, 0, loadBatch)
		}
		if res.Keys%progressEvery == 0 {
			report(false)
			if opt.Full != nil && opt.Full() {
				return errFull
			}
		}
		if failed.Load() {
			return errLoad
		}
		return nil
	})
	if len(batch) > 0 {
		batches <- batch
	}
	close(batches)
	if loadErr := <-loaded; loadErr != nil && (err == nil || errors.Is(err, errLoad)) {
		err = loadErr
	}
	switch {
	case errors.Is(err, errFull):
		res.Stopped = true
	case err != nil:
		return Result{}, fmt.Errorf("materialize %s: %w", v.Name, err)
	}
	res.Duration = time.Since(start)
	report(true)
	if opt.RecordWatermarks && !res.Stopped {
		if err := store.RecordWatermark(ctx, offline.Watermark{View: v.Name, StoredBefore: res.Watermark, Keys: res.Keys}); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}
