package trainingexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/sync/errgroup"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/onnxrt"
)

// Models is what scoring needs of the model registry.
type Models interface {
	Resolve(ctx context.Context, ref string) (*registry.Version, error)
	Artifact(ctx context.Context, v *registry.Version) ([]byte, error)
}

// ScoreRequest describes a batch scoring run.
type ScoreRequest struct {
	// Model is name, name@alias or name:version.
	Model string
	// The entity rows (join keys; other columns are carried through): a
	// file, or a ClickHouse query.
	EntitiesFile, EntitiesFormat, EntitiesSQL string
	// At is the instant every entity is scored at (point in time).
	At time.Time
	// Out is the result file (Parquet, CSV or Arrow IPC by extension or
	// Format); it appears only once complete.
	Out, Format string
	// Compression is a Parquet Out's compression: zstd (the default when
	// empty), snappy or none. CSV and Arrow IPC files and tables refuse
	// it.
	Compression string
	// DefinitionsVersion is the applied version repo is, for the record of
	// the run.
	DefinitionsVersion uint64
	// Table, instead of Out, is a ClickHouse table ("name" in tailor's
	// database, or "db.name") the scores replace, swapped in only once
	// every row is stored.
	Table string
	// Progress, when set, is told how far each stage got.
	Progress func(stage string, rows int64)
}

// ScoreResult summarises a scoring run.
type ScoreResult struct {
	// SnapshotID names the run's record in tailor.snapshots; every output
	// row carries it.
	SnapshotID string
	Rows       int64
	Model      string
	Version    int64
	Watermark  time.Time
	Duration   time.Duration
	// Stages is where the time went.
	Stages ScoreStages
}

// ScoreStages splits a scoring run's time by stage: loading the entity
// rows, waiting for the snapshot watermark, reading point-in-time features
// from ClickHouse (time spent waiting for the next batch), assembling
// model inputs, running the model, and writing the scores. Reading,
// running and writing overlap, so their sum may exceed the run's time.
type ScoreStages struct {
	Entities, Watermark, Features, Assemble, Model, Write time.Duration
}

// String lists the stages that took measurable time.
func (s ScoreStages) String() string {
	var parts []string
	for _, st := range []struct {
		name string
		d    time.Duration
	}{{"entities", s.Entities}, {"watermark", s.Watermark}, {"features", s.Features}, {"assemble", s.Assemble}, {"model", s.Model}, {"write", s.Write}} {
		parts = append(parts, fmt.Sprintf("%s %s", st.name, st.d.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// scoreTS is the timestamp column added to the entity rows.
const scoreTS = "__tailor_score_at"

// Score computes a model's outputs for every entity at req.At: the
// features are the point-in-time values at that instant (read as of a
// snapshot watermark), assembled as the model's metadata says and run on
// ONNX Runtime batch by batch, so memory stays flat in the population's
// size. The output has the entity columns, the model and version, and one
// column per output value (output__label when labelled).
func Score(ctx context.Context, store *offline.Store, reg Models, repo *definitions.Repo, req ScoreRequest) (ScoreResult, error) {
	start := time.Now()
	if (req.Out == "") == (req.Table == "") {
		return ScoreResult{}, errors.New("pass --out FILE or --table NAME")
	}
	if req.At.IsZero() {
		return ScoreResult{}, errors.New("no instant: pass --at TIME")
	}
	var outFormat tablefile.Format
	var wopt tablefile.WriteOptions
	switch {
	case req.Out != "":
		var err error
		if outFormat, wopt, err = OutputOptions(req.Out, req.Format, req.Compression); err != nil {
			return ScoreResult{}, err
		}
	case req.Compression != "":
		return ScoreResult{}, &tablefile.CompressionError{Value: req.Compression, Output: "ClickHouse table"}
	}
	snapshot := startWatermark(ctx, store)
	v, err := reg.Resolve(ctx, req.Model)
	if err != nil {
		return ScoreResult{}, err
	}
	plan, err := assemble.Compile(v.Spec, repo)
	if err != nil {
		return ScoreResult{}, err
	}
	if len(plan.Refs) == 0 {
		return ScoreResult{}, fmt.Errorf("model %s:%d reads no features; batch scoring fills features only", v.Name, v.Version)
	}
	b, err := reg.Artifact(ctx, v)
	if err != nil {
		return ScoreResult{}, err
	}
	if err := onnxrt.Init(""); err != nil {
		return ScoreResult{}, err
	}
	sess, err := onnxrt.NewSession(b, onnxrt.SessionOptions{})
	if err != nil {
		return ScoreResult{}, err
	}
	defer sess.Close()

	keys, err := offline.JoinKeys(repo, plan.Refs)
	if err != nil {
		return ScoreResult{}, err
	}
	var stages ScoreStages
	lap := time.Now()
	since := func(d *time.Duration) {
		now := time.Now()
		*d += now.Sub(lap)
		lap = now
	}
	set, err := entitiesAt(ctx, store, req, keys)
	if err != nil {
		return ScoreResult{}, err
	}
	defer set.Drop(ctx)
	since(&stages.Entities)
	watermark, err := snapshot()
	if err != nil {
		return ScoreResult{}, err
	}
	since(&stages.Watermark)
	// The query's own context: ending the run early cancels it in
	// ClickHouse instead of reading what remains.
	qctx, cancelQuery := context.WithCancel(ctx)
	ret, err := store.Retrieve(qctx, repo, set, plan.Refs, offline.RetrieveOptions{FullNames: true, StoredBefore: watermark, BatchRows: 4096})
	if err != nil {
		cancelQuery()
		return ScoreResult{}, err
	}
	defer func() {
		cancelQuery()
		ret.Close()
	}()

	snapshotID := newSnapshotID(time.Now())
	derived, err := assemble.DeriveContext(nil, req.At)
	if err != nil {
		return ScoreResult{}, err
	}
	nEntity := len(ret.Schema().Fields()) - len(plan.Refs)
	var w tablefile.Writer
	var outSchema *arrow.Schema
	var table *tableSink
	if req.Table != "" {
		if table, err = newTableSink(ctx, store, req.Table); err != nil {
			return ScoreResult{}, err
		}
		defer table.finish()
	}
	tmp := filepath.Join(filepath.Dir(req.Out), "."+filepath.Base(req.Out)+".scoring")
	if req.Out != "" {
		defer os.Remove(tmp)
	}

	// Three stages run at once, so reading features from ClickHouse,
	// running the model and writing scores overlap: each stage's time in
	// stages is its own goroutine's.
	type scored struct {
		rec  arrow.RecordBatch
		outs []onnxrt.Tensor
	}
	g, gctx := errgroup.WithContext(ctx)
	fetched := make(chan arrow.RecordBatch, 2)
	done := make(chan scored, 2)
	g.Go(func() error {
		defer close(fetched)
		for {
			t0 := time.Now()
			rec, err := ret.Next()
			stages.Features += time.Since(t0)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			select {
			case fetched <- rec:
			case <-gctx.Done():
				rec.Release()
				return gctx.Err()
			}
		}
	})
	g.Go(func() error {
		defer close(done)
		for rec := range fetched {
			t0 := time.Now()
			inputs, err := scoreInputs(plan, rec, nEntity, derived)
			stages.Assemble += time.Since(t0)
			if err != nil {
				rec.Release()
				return err
			}
			t0 = time.Now()
			outs, err := sess.Run(gctx, inputs)
			stages.Model += time.Since(t0)
			if err != nil {
				rec.Release()
				return fmt.Errorf("model %s:%d: %w", v.Name, v.Version, err)
			}
			select {
			case done <- scored{rec, outs}:
			case <-gctx.Done():
				rec.Release()
				return gctx.Err()
			}
		}
		return nil
	})
	var rows int64
	g.Go(func() error {
		for b := range done {
			t0 := time.Now()
			err := func() error {
				defer b.rec.Release()
				n := int(b.rec.NumRows())
				if outSchema == nil {
					outSchema = scoreSchema(b.rec.Schema(), nEntity, v.Spec, b.outs)
					if table == nil {
						var err error
						if w, err = tablefile.Create(tmp, outFormat, outSchema, wopt); err != nil {
							return err
						}
					}
				}
				out := scoreRecord(outSchema, b.rec, nEntity, v, b.outs, n, snapshotID)
				defer out.Release()
				var err error
				if table != nil {
					err = table.write(out)
				} else {
					err = w.Write(out)
				}
				if err != nil {
					return fmt.Errorf("write %s: %w", req.Out+req.Table, err)
				}
				rows += int64(n)
				return nil
			}()
			stages.Write += time.Since(t0)
			if err != nil {
				return err
			}
			if req.Progress != nil {
				req.Progress("score "+v.Name, rows)
			}
		}
		return nil
	})
	err = g.Wait()
	// A failed stage leaves batches in flight: release them.
	for rec := range fetched {
		rec.Release()
	}
	for b := range done {
		b.rec.Release()
	}
	if w != nil && (err != nil || outSchema == nil) {
		w.Close()
	}
	if err != nil {
		return ScoreResult{}, err
	}
	lap = time.Now()
	if outSchema == nil {
		return ScoreResult{}, errors.New("no entity rows to score")
	}
	if table != nil {
		if err := table.commit(); err != nil {
			return ScoreResult{}, err
		}
	} else {
		if err := w.Close(); err != nil {
			return ScoreResult{}, err
		}
		if err := os.Rename(tmp, req.Out); err != nil {
			return ScoreResult{}, err
		}
	}
	since(&stages.Write)
	// The run's record: what was scored, by which version, as of when.
	at := req.At.UTC()
	m := &Manifest{SnapshotID: snapshotID, CreatedAt: time.Now().UTC(), Watermark: watermark, DefinitionsVersion: req.DefinitionsVersion,
		Rows: rows, Format: string(outFormat), Compression: string(wopt.Compression), TailorVersion: tailorVersion(), Model: fmt.Sprintf("%s:%d", v.Name, v.Version), At: &at}
	if req.Table != "" {
		m.Format, m.File = "clickhouse", req.Table
	} else {
		m.File = filepath.Base(req.Out)
	}
	for _, r := range plan.Refs {
		m.Features = append(m.Features, ManifestColumn{Ref: r.String(), Type: string(r.Type), Column: offline.OutputName(r, true)})
	}
	if req.EntitiesSQL != "" {
		m.Entities = EntitySource{Kind: "sql", SQL: req.EntitiesSQL}
	} else if sum, err := fileSHA256(req.EntitiesFile); err == nil {
		m.Entities = EntitySource{Kind: "file", Path: req.EntitiesFile, Format: req.EntitiesFormat, SHA256: sum}
	}
	if err := m.write(ctx, store, ""); err != nil {
		return ScoreResult{}, err
	}
	since(&stages.Write)
	return ScoreResult{SnapshotID: snapshotID, Rows: rows, Model: v.Name, Version: v.Version, Watermark: watermark, Duration: time.Since(start), Stages: stages}, nil
}

// scoreInputs assembles a model's input tensors from a batch of features.
func scoreInputs(plan *assemble.Plan, rec arrow.RecordBatch, nEntity int, derived map[string]any) ([]onnxrt.Tensor, error) {
	batch := make([]assemble.Row, rec.NumRows())
	for i := range batch {
		batch[i] = assemble.Row{Features: make([]any, len(plan.Refs)), Context: derived}
		for j, r := range plan.Refs {
			val, err := offline.CellValue(rec.Column(nEntity+j), i, r.Type)
			if err != nil {
				return nil, fmt.Errorf("feature %s: %w", r, err)
			}
			batch[i].Features[j] = val
		}
	}
	return models.ToRuntime(plan.Fill(batch)), nil
}

// startWatermark takes the snapshot watermark in the background, so that
// its wait (one to two seconds) overlaps loading the model and the entity
// rows; the function returned waits for it. Taken at the start of a run,
// it still holds every row stored before the run began.
func startWatermark(ctx context.Context, store *offline.Store) func() (time.Time, error) {
	type taken struct {
		at  time.Time
		err error
	}
	ch := make(chan taken, 1)
	go func() {
		at, err := store.SnapshotWatermark(ctx)
		ch <- taken{at, err}
	}()
	return sync.OnceValues(func() (time.Time, error) {
		t := <-ch
		return t.at, t.err
	})
}

// entitiesAt uploads the entity rows of a scoring run, every one stamped
// with the scoring instant.
func entitiesAt(ctx context.Context, store *offline.Store, req ScoreRequest, keys map[string]definitions.ValueType) (*offline.EntitySet, error) {
	opt := offline.EntityOptions{TimestampColumn: scoreTS, JoinKeys: keys}
	switch {
	case req.EntitiesSQL != "" && req.EntitiesFile != "":
		return nil, errors.New("pass either --entities or --entities-sql, not both")
	case req.EntitiesSQL != "":
		return store.EntitiesFromSQL(ctx, fmt.Sprintf("SELECT *, toDateTime(%d) AS %s FROM (%s)", req.At.Unix(), scoreTS, req.EntitiesSQL), opt)
	case req.EntitiesFile != "":
		return uploadAt(ctx, store, req, opt)
	}
	return nil, errors.New("no entity rows: pass --entities FILE or --entities-sql QUERY")
}

// uploadAt uploads an entity file with the scoring instant added as its
// timestamp column.
func uploadAt(ctx context.Context, store *offline.Store, req ScoreRequest, opt offline.EntityOptions) (*offline.EntitySet, error) {
	f, err := tablefile.DetectFormat(req.EntitiesFile, req.EntitiesFormat)
	if err != nil {
		return nil, err
	}
	r, err := tablefile.Open(req.EntitiesFile, f, tablefile.ReadOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	opt.InferTypes = f == tablefile.CSV
	return store.UploadEntities(ctx, req.EntitiesFile, &withInstant{src: r, at: req.At}, opt)
}

// withInstant adds a constant timestamp column to every batch.
type withInstant struct {
	src    offline.RecordSource
	at     time.Time
	schema *arrow.Schema
}

var tsType = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

func (w *withInstant) Schema() *arrow.Schema {
	if w.schema == nil {
		fields := append(append([]arrow.Field{}, w.src.Schema().Fields()...), arrow.Field{Name: scoreTS, Type: tsType})
		w.schema = arrow.NewSchema(fields, nil)
	}
	return w.schema
}

func (w *withInstant) Next() (arrow.RecordBatch, error) {
	rec, err := w.src.Next()
	if err != nil {
		return nil, err
	}
	b := array.NewTimestampBuilder(memory.DefaultAllocator, tsType)
	defer b.Release()
	for range rec.NumRows() {
		b.Append(arrow.Timestamp(w.at.UnixMicro()))
	}
	col := b.NewArray()
	defer col.Release()
	cols := append(append([]arrow.Array{}, rec.Columns()...), col)
	out := array.NewRecordBatch(w.Schema(), cols, rec.NumRows())
	rec.Release()
	return out, nil
}

// scoreSchema is the output: entity columns (without the instant), model,
// version, then the outputs' values.
func scoreSchema(in *arrow.Schema, nEntity int, spec *registry.Spec, outs []onnxrt.Tensor) *arrow.Schema {
	var fields []arrow.Field
	for _, f := range in.Fields()[:nEntity] {
		if f.Name != scoreTS {
			fields = append(fields, f)
		}
	}
	fields = append(fields, arrow.Field{Name: "model", Type: arrow.BinaryTypes.String}, arrow.Field{Name: "model_version", Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: "snapshot_id", Type: arrow.BinaryTypes.String})
	for _, name := range outputColumns(spec, outs) {
		fields = append(fields, arrow.Field{Name: name, Type: arrow.PrimitiveTypes.Float64})
	}
	return arrow.NewSchema(fields, nil)
}

// outputColumns names one column per value of each numeric output.
func outputColumns(spec *registry.Spec, outs []onnxrt.Tensor) []string {
	labels := map[string][]string{}
	for _, o := range spec.Outputs {
		labels[o.Name] = o.Labels
	}
	var names []string
	for _, t := range outs {
		width := t.RowWidth()
		ls := labels[t.Name]
		switch {
		case t.Maps != nil:
			for _, l := range ls {
				names = append(names, t.Name+"__"+l)
			}
		case t.Float32 != nil || t.Float64 != nil || t.Int64 != nil || t.Int32 != nil:
			for k := range width {
				if len(ls) == width {
					names = append(names, t.Name+"__"+ls[k])
				} else {
					names = append(names, fmt.Sprintf("%s__%d", t.Name, k))
				}
			}
		}
	}
	return names
}

func scoreRecord(schema *arrow.Schema, rec arrow.RecordBatch, nEntity int, v *registry.Version, outs []onnxrt.Tensor, n int, snapshotID string) arrow.RecordBatch {
	var cols []arrow.Array
	for i := 0; i < nEntity; i++ {
		if rec.Schema().Field(i).Name == scoreTS {
			continue
		}
		c := rec.Column(i)
		c.Retain()
		cols = append(cols, c)
	}
	mb := array.NewStringBuilder(memory.DefaultAllocator)
	vb := array.NewInt64Builder(memory.DefaultAllocator)
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	for range n {
		mb.Append(v.Name)
		vb.Append(v.Version)
		sb.Append(snapshotID)
	}
	cols = append(cols, mb.NewArray(), vb.NewArray(), sb.NewArray())
	mb.Release()
	vb.Release()
	sb.Release()
	labels := map[string][]string{}
	for _, o := range v.Spec.Outputs {
		labels[o.Name] = o.Labels
	}
	for _, t := range outs {
		width := t.RowWidth()
		value := func(i, k int) float64 {
			switch {
			case t.Float32 != nil:
				return float64(t.Float32[i*width+k])
			case t.Float64 != nil:
				return t.Float64[i*width+k]
			case t.Int64 != nil:
				return float64(t.Int64[i*width+k])
			case t.Int32 != nil:
				return float64(t.Int32[i*width+k])
			}
			return 0
		}
		switch {
		case t.Maps != nil:
			for _, l := range labels[t.Name] {
				fb := array.NewFloat64Builder(memory.DefaultAllocator)
				for i := range n {
					fb.Append(float64(t.Maps[i][l]))
				}
				cols = append(cols, fb.NewArray())
				fb.Release()
			}
		case t.Float32 != nil || t.Float64 != nil || t.Int64 != nil || t.Int32 != nil:
			for k := range width {
				fb := array.NewFloat64Builder(memory.DefaultAllocator)
				for i := range n {
					fb.Append(value(i, k))
				}
				cols = append(cols, fb.NewArray())
				fb.Release()
			}
		}
	}
	out := array.NewRecordBatch(schema, cols, int64(n))
	for _, c := range cols {
		c.Release()
	}
	return out
}
