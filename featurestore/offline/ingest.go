package offline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// RecordSource is a stream of Arrow record batches, such as a
// tablefile.Reader over a CSV, Parquet or Arrow IPC file.
type RecordSource interface {
	Schema() *arrow.Schema
	Next() (arrow.RecordBatch, error)
}

// IngestOptions tunes Ingest.
type IngestOptions struct {
	// BatchRows is how many rows go to ClickHouse per insert block (default 65536).
	BatchRows int
	// AllowMissingFeatures stores null for features the file has no column for;
	// without it a missing feature column is an error.
	AllowMissingFeatures bool
	// IgnoreExtraColumns skips file columns that are not part of the view;
	// without it they are an error (a typo would otherwise load nulls).
	IgnoreExtraColumns bool
	// Progress, when set, is told how many rows are loaded so far.
	Progress func(rows int64)
	// Direct inserts every row in one block straight into the view's table,
	// without a staging table: one INSERT is atomic in a tailor-owned table
	// (a single partition) and cheaper for small pushes. BatchRows is
	// ignored.
	Direct bool
	// Unlogged skips the ingestion log (two round trips): for a small
	// direct insert whose rows are stamped moments before they commit, as
	// a Push is; change scans' overlap covers it.
	Unlogged bool
}

// IngestResult summarises one loaded file.
type IngestResult struct {
	Rows     int64
	Duration time.Duration
}

// CellError is a value in an input file that cannot be loaded: it names the
// file, the 1-based data row, the column and the value.
type CellError struct {
	File   string
	Row    int64
	Column string
	Value  string
	Msg    string
}

func (e *CellError) Error() string {
	return fmt.Sprintf("%s: row %d, column %q: value %q: %s", e.File, e.Row, e.Column, e.Value, e.Msg)
}

// InvalidInput marks a bad cell as the caller's mistake.
func (e *CellError) InvalidInput() bool { return true }

// target is one column of the view's table that ingestion fills.
type target struct {
	name string
	src  int // index in the file's schema; -1 when the file lacks it
	buf  column
}

// Ingest loads every row of src into the table of view viewName. The load
// is all or nothing: rows go to a staging table first, and only a file
// that loaded completely is attached to the view's table in one step, so a
// bad cell or a lost connection leaves nothing of the file visible.
// name identifies the source in errors (usually the file path).
func (s *Store) Ingest(ctx context.Context, repo *definitions.Repo, viewName, name string, src RecordSource, opt IngestOptions) (IngestResult, error) {
	start := time.Now()
	v, ok := repo.View(viewName)
	if !ok {
		return IngestResult{}, fmt.Errorf("ingest %s: %w", name, &UnknownViewError{View: viewName})
	}
	if v.Windowed() {
		return IngestResult{}, fmt.Errorf("ingest %s: feature view %q aggregates the events of %s: its features are computed, not ingested (load events into that table)", name, v.Name, v.Source.Table)
	}
	if opt.BatchRows <= 0 {
		opt.BatchRows = 65536
	}
	targets, err := s.ingestTargets(repo, v, name, src.Schema(), opt)
	if err != nil {
		return IngestResult{}, err
	}
	table := s.viewTable(v)
	stage := table
	// Rows carry insertion times from now on but become visible only at
	// the commit; the ingestion's lease holds snapshot watermarks back to
	// here while it runs, and the ingestion log lets change scans look
	// back this far.
	var storedFrom time.Time
	if !opt.Unlogged {
		if storedFrom, err = s.Now(ctx); err != nil {
			return IngestResult{}, fmt.Errorf("ingest %s: %w", name, err)
		}
	}
	var lease *Lease
	if opt.Direct {
		opt.BatchRows = math.MaxInt
	} else {
		kind := LeaseIngest
		if opt.Unlogged {
			kind = LeaseTables // nothing to hold back: only the staging table
		}
		id := NewLeaseID()
		stage = tableRef{DB: s.db, Name: fmt.Sprintf("_stage_%s_%s", v.Name, id)}
		if lease, err = s.Lease(ctx, id, kind, storedFrom, TableName(stage)); err != nil {
			return IngestResult{}, fmt.Errorf("ingest %s: %w", name, err)
		}
		defer func() {
			// The staging table goes whatever happened; a cancelled ctx
			// must not leave it behind. If it cannot be dropped, the lease
			// stays unreleased, and a sweep drops the table once this
			// process is gone.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := s.conn.Exec(dctx, "DROP TABLE IF EXISTS "+stage.String()); err != nil {
				s.log.Warn("drop staging table", "table", stage.Plain(), "err", err)
				return
			}
			lease.Release(dctx)
		}()
		create := fmt.Sprintf("CREATE TABLE %s AS %s", stage, table)
		if v.External() {
			create += " ENGINE = MergeTree ORDER BY tuple()"
		}
		if err := s.conn.Exec(ctx, create); err != nil {
			return IngestResult{}, fmt.Errorf("ingest %s: create staging table: %w", name, err)
		}
	}

	colNames := make([]string, len(targets))
	for i, t := range targets {
		colNames[i] = QuoteIdent(t.name)
	}
	insert := fmt.Sprintf("INSERT INTO %s (%s)", stage, strings.Join(colNames, ", "))

	var rows, pending int64
	send := func() error {
		if pending == 0 {
			return nil
		}
		b, err := s.conn.PrepareBatch(ctx, insert)
		if err != nil {
			return fmt.Errorf("ingest %s: %w", name, err)
		}
		for i, t := range targets {
			if err := b.Column(i).Append(t.buf.take()); err != nil {
				b.Abort()
				return fmt.Errorf("ingest %s: column %s: %w", name, t.name, err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("ingest %s: insert into staging table: %w", name, err)
		}
		pending = 0
		if opt.Progress != nil {
			opt.Progress(rows)
		}
		return nil
	}

	for {
		if err := ctx.Err(); err != nil {
			return IngestResult{}, fmt.Errorf("ingest %s: %w", name, err)
		}
		rec, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return IngestResult{}, &SourceError{Name: name, Err: err}
		}
		n := int(rec.NumRows())
		for i := 0; i < n; i++ {
			for _, t := range targets {
				var err error
				if t.src < 0 {
					err = t.buf.add(nil, i)
				} else if col := rec.Column(t.src); col.IsNull(i) {
					err = t.buf.addNull()
				} else {
					err = t.buf.add(col, i)
				}
				if err != nil {
					err = cellError(name, rows+1, t, rec, i, err)
					rec.Release()
					return IngestResult{}, err
				}
			}
			rows++
			pending++
			if pending >= int64(opt.BatchRows) {
				if err := send(); err != nil {
					rec.Release()
					return IngestResult{}, err
				}
			}
		}
		rec.Release()
	}
	if err := send(); err != nil {
		return IngestResult{}, err
	}
	if rows > 0 && !opt.Direct {
		if !lease.Held() {
			// Snapshots taken meanwhile may have judged this ingestion
			// dead and read past its rows' insertion times: publishing
			// them now would change those snapshots' answers.
			return IngestResult{}, fmt.Errorf("ingest %s: %w: nothing was loaded; run it again", name, ErrLeaseLost)
		}
		if err := s.publish(ctx, table, stage, targets, v.External()); err != nil {
			return IngestResult{}, fmt.Errorf("ingest %s: %w", name, err)
		}
	}
	if rows > 0 && !opt.Unlogged {
		if err := s.logIngestion(ctx, v, rows, storedFrom); err != nil {
			// The rows are stored; replicas fall back to the scan overlap.
			s.log.Warn("ingestion log", "view", v.Name, "err", err)
		}
	}
	s.log.Info("ingested", "view", v.Name, "file", name, "rows", rows, "duration", time.Since(start))
	return IngestResult{Rows: rows, Duration: time.Since(start)}, nil
}

// publish makes a fully staged file visible. A tailor-owned table is a
// single partition, so ATTACH PARTITION moves every staged part at once.
// An external table may be partitioned any way; it gets one INSERT SELECT.
func (s *Store) publish(ctx context.Context, table, stage tableRef, targets []target, external bool) error {
	if !external {
		if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION tuple() FROM %s", table, stage)); err != nil {
			return fmt.Errorf("attach staged rows to %s: %w", table.Plain(), err)
		}
		return nil
	}
	cols := make([]string, len(targets))
	for i, t := range targets {
		cols[i] = QuoteIdent(t.name)
	}
	list := strings.Join(cols, ", ")
	if err := s.conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", table, list, list, stage)); err != nil {
		return fmt.Errorf("copy staged rows into %s: %w", table.Plain(), err)
	}
	return nil
}

func cellError(file string, row int64, t target, rec arrow.RecordBatch, i int, err error) error {
	ce := &CellError{File: file, Row: row, Column: t.name}
	var ve *valueError
	switch {
	case errors.As(err, &ve):
		ce.Value, ce.Msg = ve.Value, ve.Msg
	default:
		ce.Msg = err.Error()
		if t.src >= 0 && !rec.Column(t.src).IsNull(i) {
			ce.Value = cellText(rec.Column(t.src), i)
		}
	}
	return ce
}

// ingestTargets matches the file's columns to the view's table by name.
func (s *Store) ingestTargets(repo *definitions.Repo, v *definitions.FeatureView, name string, schema *arrow.Schema, opt IngestOptions) ([]target, error) {
	index := map[string]int{}
	for i, f := range schema.Fields() {
		index[f.Name] = i
	}
	used := map[string]bool{}
	var targets []target
	var missing []string
	addReq := func(col string, t definitions.ValueType, what string) {
		i, ok := index[col]
		if !ok {
			missing = append(missing, fmt.Sprintf("%q (%s)", col, what))
			return
		}
		used[col] = true
		targets = append(targets, target{name: col, src: i, buf: newColumn(t, true)})
	}
	for _, e := range repo.JoinKeys(v) {
		addReq(e.JoinKey, e.Type, "join key of entity "+e.Name)
	}
	addReq(v.Source.TimestampField, definitions.Timestamp, "event timestamp")
	if cf := CreatedColumn(v); cf != "" {
		if i, ok := index[cf]; ok {
			used[cf] = true
			targets = append(targets, target{name: cf, src: i, buf: newColumn(definitions.Timestamp, true)})
		} else {
			// Rows loaded later win ties on the event timestamp.
			now := time.Now().UTC().Truncate(time.Second)
			targets = append(targets, target{name: cf, src: -1, buf: &constant[time.Time]{value: now}})
		}
	}
	var missingFeatures []string
	for _, f := range v.Features {
		i, ok := index[f.Name]
		if !ok {
			missingFeatures = append(missingFeatures, f.Name)
			continue
		}
		used[f.Name] = true
		targets = append(targets, target{name: f.Name, src: i, buf: newColumn(f.Type, false)})
	}
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, "missing required column(s) "+strings.Join(missing, ", "))
	}
	if len(missingFeatures) > 0 && !opt.AllowMissingFeatures {
		problems = append(problems, fmt.Sprintf("no column for feature(s) %s of view %q (pass --allow-missing-features to store them as null)", strings.Join(missingFeatures, ", "), v.Name))
	}
	if !opt.IgnoreExtraColumns {
		var extra []string
		for _, f := range schema.Fields() {
			if !used[f.Name] && f.Name != InsertedAtColumn {
				extra = append(extra, fmt.Sprintf("%q", f.Name))
			}
		}
		if len(extra) > 0 {
			problems = append(problems, fmt.Sprintf("column(s) %s are not part of view %q (pass --ignore-extra-columns to skip them)", strings.Join(extra, ", "), v.Name))
		}
	}
	if len(problems) > 0 {
		slices.Sort(missingFeatures)
		return nil, &SchemaError{File: name, Problems: problems}
	}
	return targets, nil
}

// SchemaError is an input file whose columns do not fit the view.
type SchemaError struct {
	File     string
	Problems []string
}

func (e *SchemaError) Error() string { return e.File + ": " + strings.Join(e.Problems, "; ") }

// InvalidInput marks a file that does not fit as the caller's mistake.
func (e *SchemaError) InvalidInput() bool { return true }

// SourceError is an input file or stream that cannot be read (a CSV line
// that does not parse, a corrupt Parquet file): it names the source.
type SourceError struct {
	Name string
	Err  error
}

func (e *SourceError) Error() string {
	// Readers name their file and line already.
	if strings.Contains(e.Err.Error(), e.Name) {
		return e.Err.Error()
	}
	return e.Name + ": " + e.Err.Error()
}

func (e *SourceError) Unwrap() error { return e.Err }

// InvalidInput marks an unreadable input as the caller's mistake.
func (e *SourceError) InvalidInput() bool { return true }

// UnknownViewError is a reference to a feature view that is not applied.
type UnknownViewError struct{ View string }

func (e *UnknownViewError) Error() string {
	return fmt.Sprintf("unknown feature view %q (see `tailor views list`)", e.View)
}

// InvalidInput marks an unknown view as the caller's mistake.
func (e *UnknownViewError) InvalidInput() bool { return true }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
