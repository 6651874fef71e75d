package offline

import (
	"context"
	"fmt"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// ScanOptions selects the keys ScanLatest visits.
type ScanOptions struct {
	// At is the point-in-time instant: rows with a later event time are
	// not considered (default: ClickHouse's now).
	At time.Time
	// Start and End, when set, keep only the keys whose latest row has an
	// event time in [Start, End]. The row reported is always the latest at
	// At, never a row picked from inside the window, so a window in the
	// past cannot make an outdated value look current.
	Start, End time.Time
	// KeysStoredSince, when set, visits only the keys with a row stored at
	// or after it (by insertion time); their latest row is still chosen
	// among all their rows.
	KeysStoredSince time.Time
	// RowsStoredSince, when set, considers only the rows stored at or after
	// it: the row reported per key is the latest of those, which a caller
	// holding an older row compares with its own.
	RowsStoredSince time.Time
}

// ScanLatest streams the latest row of every key of v selected by opt to
// fn, in no particular order. The latest row per key is chosen inside
// ClickHouse; rows arrive block by block, so memory stays flat however
// many keys the view holds. It returns the number of rows handed to fn.
// A view whose table has no insertion-time column cannot be scanned by
// insertion time; ErrNoInsertionTime says so.
func (s *Store) ScanLatest(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, opt ScanOptions, fn func(LatestRow) error) (int64, error) {
	at := opt.At
	if at.IsZero() {
		var err error
		if at, err = s.Now(ctx); err != nil {
			return 0, err
		}
	}
	var where, having []string
	for _, since := range []struct {
		t    time.Time
		keys bool
	}{{opt.KeysStoredSince, true}, {opt.RowsStoredSince, false}} {
		if since.t.IsZero() {
			continue
		}
		from, err := s.storedSince(ctx, v, since.t)
		if err != nil {
			return 0, err
		}
		cond := fmt.Sprintf("%s >= toDateTime(%d)", QuoteIdent(InsertedAtColumn), from.Unix())
		if since.keys {
			keys := keyColumns(repo, v)
			cond = fmt.Sprintf("(%s) IN (SELECT %s FROM %s WHERE %s)", keys, keys, s.viewTable(v), cond)
		}
		where = append(where, cond)
	}
	if !opt.Start.IsZero() {
		having = append(having, fmt.Sprintf("_version >= toUInt64(%d) * 4294967296", opt.Start.Unix()))
	}
	if !opt.End.IsZero() {
		having = append(having, fmt.Sprintf("_version < toUInt64(%d) * 4294967296", opt.End.Unix()+1))
	}
	n, err := s.streamLatest(ctx, s.latestSQL(repo, v, at, where, having), repo, v, fn)
	if err != nil {
		return n, fmt.Errorf("scan latest rows of %s: %w", v.Name, err)
	}
	return n, nil
}

// ErrNoInsertionTime marks a view whose table has no insertion-time column
// (an external table created without one): its changes cannot be found by
// insertion time.
var ErrNoInsertionTime = fmt.Errorf("table has no %s column", InsertedAtColumn)

// Now is ClickHouse's current time, the clock insertion times are set by.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var sec uint32
	if err := s.conn.QueryRow(ctx, "SELECT toUnixTimestamp(now())").Scan(&sec); err != nil {
		return time.Time{}, fmt.Errorf("%w: read the server clock: %w", ErrUnavailable, err)
	}
	return time.Unix(int64(sec), 0).UTC(), nil
}

// storedSince widens an insertion-time bound so it also covers files whose
// ingestion committed at or after t: their rows were staged, and so carry
// insertion times, from when the ingestion began.
func (s *Store) storedSince(ctx context.Context, v *definitions.FeatureView, t time.Time) (time.Time, error) {
	if err := s.checkInsertionTime(ctx, v); err != nil {
		return time.Time{}, err
	}
	var from uint32
	var n uint64
	err := s.conn.QueryRow(ctx, fmt.Sprintf(
		"SELECT count(), toUnixTimestamp(min(stored_from)) FROM %s.ingest_log WHERE view = ? AND committed_at >= toDateTime(?)",
		QuoteIdent(s.db)), v.Name, t.Unix()).Scan(&n, &from)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the ingestion log of %s: %w", v.Name, err)
	}
	if n > 0 && int64(from) < t.Unix() {
		return time.Unix(int64(from), 0).UTC(), nil
	}
	return t, nil
}

func (s *Store) checkInsertionTime(ctx context.Context, v *definitions.FeatureView) error {
	if !v.External() {
		return nil
	}
	t := s.viewTable(v)
	if ok, cached := s.insertionCols.Load(t.Plain()); cached {
		if !ok.(bool) {
			return fmt.Errorf("view %s (%s): %w", v.Name, t.Plain(), ErrNoInsertionTime)
		}
		return nil
	}
	cols, exists, err := s.tableColumns(ctx, t)
	if err != nil {
		return err
	}
	has := false
	for _, c := range cols {
		has = has || c.Name == InsertedAtColumn
	}
	if exists {
		s.insertionCols.Store(t.Plain(), has)
	}
	if !has {
		return fmt.Errorf("view %s (%s): %w", v.Name, t.Plain(), ErrNoInsertionTime)
	}
	return nil
}

// logIngestion records a committed ingestion of v whose rows were stored
// from storedFrom on (see storedSince).
func (s *Store) logIngestion(ctx context.Context, v *definitions.FeatureView, rows int64, storedFrom time.Time) error {
	err := s.conn.Exec(ctx, fmt.Sprintf(
		"INSERT INTO %s.ingest_log (view, rows, stored_from) SELECT ?, toUInt64(?), toDateTime(?)", QuoteIdent(s.db)),
		v.Name, rows, storedFrom.Unix())
	if err != nil {
		return fmt.Errorf("record the ingestion of %s: %w", v.Name, err)
	}
	return nil
}

// Watermark is where a view's last materialization left off.
type Watermark struct {
	View string
	// StoredBefore: every row stored before it had been loaded; an
	// incremental run loads the keys with rows stored since.
	StoredBefore time.Time
	// Keys is how many keys that run loaded; At when it finished.
	Keys int64
	At   time.Time
}

// LastWatermark returns the watermark of v's latest materialization; ok is
// false when v was never materialized.
func (s *Store) LastWatermark(ctx context.Context, view string) (w Watermark, ok bool, err error) {
	var n uint64
	var stored, at uint32
	var keys uint64
	err = s.conn.QueryRow(ctx, fmt.Sprintf(
		"SELECT count(), toUnixTimestamp(max(stored_before)), argMax(keys, stored_before), toUnixTimestamp(max(finished_at)) FROM %s.materializations WHERE view = ?",
		QuoteIdent(s.db)), view).Scan(&n, &stored, &keys, &at)
	if err != nil {
		return Watermark{}, false, fmt.Errorf("read the watermark of %s: %w", view, err)
	}
	if n == 0 {
		return Watermark{View: view}, false, nil
	}
	return Watermark{View: view, StoredBefore: time.Unix(int64(stored), 0).UTC(), Keys: int64(keys), At: time.Unix(int64(at), 0).UTC()}, true, nil
}

// RecordWatermark stores w as the latest materialization of its view.
func (s *Store) RecordWatermark(ctx context.Context, w Watermark) error {
	err := s.conn.Exec(ctx, fmt.Sprintf(
		"INSERT INTO %s.materializations (view, stored_before, keys) SELECT ?, toDateTime(?), toUInt64(?)", QuoteIdent(s.db)),
		w.View, w.StoredBefore.Unix(), w.Keys)
	if err != nil {
		return fmt.Errorf("record the watermark of %s: %w", w.View, err)
	}
	return nil
}

// snapshotMargin is how long after a watermark a snapshot waits before
// reading: a direct insert stamped just before the watermark has
// committed by then.
const snapshotMargin = time.Second

// SnapshotWatermark is an insertion time before which the offline store
// will not change any more: every row stored before it is visible once it
// returns, and every row stored later has a later insertion time. Reading
// "as of" it (RetrieveOptions.StoredBefore) gives the same answer later,
// however many rows arrive meanwhile. It is the next whole second, so
// rows stored until now are in the snapshot, and it returns once the
// clock has passed it by snapshotMargin (about one to two seconds). An
// ingestion still running holds it back to when that ingestion began
// staging, as long as its process lives: the lease of a process that died
// stops counting as soon as ClickHouse sees its connections close.
func (s *Store) SnapshotWatermark(ctx context.Context) (time.Time, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return time.Time{}, err
	}
	w := now.Truncate(time.Second).Add(time.Second)
	n, from, err := s.liveIngestions(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if n > 0 && from.Before(w) {
		w = from
	}
	for now.Before(w.Add(snapshotMargin)) {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(w.Add(snapshotMargin).Sub(now)):
		}
		if now, err = s.Now(ctx); err != nil {
			return time.Time{}, err
		}
	}
	return w, nil
}
