// Package trainingexport writes point-in-time-correct training sets and
// snapshots: it uploads an entity set, runs the point-in-time join in the
// offline store, and streams the answer into a Parquet, Arrow IPC or CSV
// file.
package trainingexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
)

// Request describes one export.
type Request struct {
	// EntitiesFile is a CSV, Parquet or Arrow IPC file of entity rows.
	EntitiesFile string
	// EntitiesFormat overrides the format detected from the file name.
	EntitiesFormat string
	// EntitiesSQL takes the entity rows from a ClickHouse query instead.
	EntitiesSQL string
	// Features are feature references ("view:feature", "view:*").
	Features []string
	// Service names a feature service whose features are exported.
	Service string
	// Out is the output file; it appears only once complete.
	Out string
	// Format is the output format (default: from Out's extension).
	Format string
	// Compression is the Parquet output's compression: zstd (the default
	// when empty), snappy or none. Other formats are written
	// uncompressed and refuse it. The manifest records it, so a
	// reproduction writes the same bytes.
	Compression string
	// FullNames names feature columns view__feature.
	FullNames bool
	// TimestampColumn is the entity timestamp column (default event_timestamp).
	TimestampColumn string
	// Progress, when set, is told how far each stage got.
	Progress func(stage string, rows int64)
	// DefinitionsVersion is the applied version repo is, for the manifest.
	DefinitionsVersion uint64
	// Watermark reads the views as of this insertion time (zero: the
	// store's snapshot watermark now), so the export can be reproduced.
	Watermark time.Time
	// SnapshotID names the snapshot (zero: a new one); reproductions keep
	// the original's.
	SnapshotID string
	// EntitiesUpload names entity rows a client sent (EntitiesFile then
	// holds them in a temporary file): the manifest records this name and
	// the content's hash, not the temporary path.
	EntitiesUpload string
	// InlineEntities marks an upload as rows sent inline in a request:
	// the manifest keeps them (up to 4 MiB of CSV) so that it alone
	// reproduces the export.
	InlineEntities bool
}

// Result summarises a finished export.
type Result struct {
	Rows     int64
	Columns  []string
	Duration time.Duration
	// Manifest is what was written beside the file (and to ClickHouse).
	Manifest *Manifest
}

// Export runs req against the applied definitions repo into the file
// req.Out, and writes the manifest beside it.
func Export(ctx context.Context, store *offline.Store, repo *definitions.Repo, req Request) (Result, error) {
	if req.Out == "" {
		return Result{}, requestErrorf("no output file: pass --out FILE")
	}
	outFormat, opt, err := OutputOptions(req.Out, req.Format, req.Compression)
	if err != nil {
		return Result{}, err
	}
	req.Compression = string(opt.Compression)
	return export(ctx, store, repo, req, string(outFormat), func(src offline.RecordSource, progress func(int64)) (int64, string, error) {
		rows, err := WriteFile(req.Out, outFormat, opt, src, progress)
		if err != nil {
			return 0, "", err
		}
		sum, err := fileSHA256(req.Out)
		return rows, sum, err
	})
}

// RequestError is an export or scoring request that cannot be answered as
// given: the caller's mistake, not the store's.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// InvalidInput classifies the error (see featurestore/rpcerr).
func (e *RequestError) InvalidInput() bool { return true }

func requestErrorf(format string, args ...any) error {
	return &RequestError{fmt.Errorf(format, args...)}
}

// StreamFormat is the format of streamed exports: an Arrow IPC stream.
const StreamFormat = "arrow-stream"

// OutputOptions is how a file output is written: its format (format, or
// else out's extension) and its writer options, with compression (empty:
// the default) checked against the format. The options name the
// compression the file gets: zstd, snappy or none for Parquet, nothing
// for CSV and Arrow IPC, which refuse one (a *tablefile.CompressionError).
func OutputOptions(out, format, compression string) (tablefile.Format, tablefile.WriteOptions, error) {
	f, err := tablefile.DetectFormat(out, format)
	if err != nil {
		return "", tablefile.WriteOptions{}, err
	}
	c, err := tablefile.CheckCompression(f, tablefile.Compression(compression))
	if err != nil {
		return "", tablefile.WriteOptions{}, err
	}
	return f, tablefile.WriteOptions{Compression: c}, nil
}

// ExportStream runs req like Export but writes the answer to w as an Arrow
// IPC stream, record batch by record batch, so memory stays flat in the
// export's size; req.Out is ignored and the manifest is recorded in
// ClickHouse only. The stream is not compressed: req.Compression must be
// empty.
func ExportStream(ctx context.Context, store *offline.Store, repo *definitions.Repo, req Request, w io.Writer) (Result, error) {
	if req.Compression != "" {
		return Result{}, &tablefile.CompressionError{Value: req.Compression, Output: StreamFormat}
	}
	req.Out = ""
	return export(ctx, store, repo, req, StreamFormat, func(src offline.RecordSource, progress func(int64)) (int64, string, error) {
		h := sha256.New()
		iw := ipc.NewWriter(io.MultiWriter(w, h), ipc.WithSchema(src.Schema()))
		var rows int64
		for {
			rec, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return rows, "", err
			}
			err = iw.Write(rec)
			rows += rec.NumRows()
			rec.Release()
			if err != nil {
				return rows, "", fmt.Errorf("stream the export: %w", err)
			}
			if progress != nil {
				progress(rows)
			}
		}
		if err := iw.Close(); err != nil {
			return rows, "", fmt.Errorf("stream the export: %w", err)
		}
		return rows, hex.EncodeToString(h.Sum(nil)), nil
	})
}

// writeFunc writes a retrieval somewhere and returns the rows written and
// the sha256 of the bytes.
type writeFunc func(src offline.RecordSource, progress func(int64)) (rows int64, sha256 string, err error)

func export(ctx context.Context, store *offline.Store, repo *definitions.Repo, req Request, outFormat string, write writeFunc) (Result, error) {
	start := time.Now()
	snapshot := func() (time.Time, error) { return req.Watermark, nil }
	if req.Watermark.IsZero() {
		snapshot = startWatermark(ctx, store)
	}
	refs, err := resolve(repo, req)
	if err != nil {
		return Result{}, err
	}
	keys, err := offline.JoinKeys(repo, refs)
	if err != nil {
		return Result{}, err
	}
	progress := func(stage string) func(int64) {
		if req.Progress == nil {
			return nil
		}
		return func(n int64) { req.Progress(stage, n) }
	}
	opt := offline.EntityOptions{TimestampColumn: req.TimestampColumn, JoinKeys: keys, Progress: progress("upload")}

	var set *offline.EntitySet
	switch {
	case req.EntitiesSQL != "" && req.EntitiesFile != "":
		return Result{}, requestErrorf("pass either --entities or --entities-sql, not both")
	case req.EntitiesSQL != "":
		set, err = store.EntitiesFromSQL(ctx, req.EntitiesSQL, opt)
	case req.EntitiesFile != "":
		set, err = uploadFile(ctx, store, req, opt)
	default:
		return Result{}, requestErrorf("no entity rows: pass --entities FILE or --entities-sql QUERY")
	}
	if err != nil {
		return Result{}, err
	}
	defer set.Drop(ctx)
	store.Logger().Info("entity set uploaded", "rows", set.Rows, "took", time.Since(start))

	watermark, err := snapshot()
	if err != nil {
		return Result{}, err
	}
	ropt := offline.RetrieveOptions{FullNames: req.FullNames, StoredBefore: watermark}
	if req.Progress != nil {
		ropt.ScanProgress = func(n uint64) { req.Progress("join in ClickHouse, feature rows read", int64(n)) }
	}
	ret, err := store.Retrieve(ctx, repo, set, refs, ropt)
	if err != nil {
		return Result{}, err
	}
	defer ret.Close()

	rows, sum, err := write(ret, progress("export"))
	if err != nil {
		return Result{}, err
	}
	var cols []string
	for _, f := range ret.Schema().Fields() {
		cols = append(cols, f.Name)
	}
	m, err := manifestFor(req, refs, set, outFormat, rows, watermark, sum)
	if err != nil {
		return Result{}, err
	}
	m.Unversioned = ret.Unversioned
	if err := m.write(ctx, store, req.Out); err != nil {
		return Result{}, err
	}
	return Result{Rows: rows, Columns: cols, Duration: time.Since(start), Manifest: m}, nil
}

func resolve(repo *definitions.Repo, req Request) ([]definitions.FeatureRef, error) {
	switch {
	case req.Service != "" && len(req.Features) > 0:
		return nil, requestErrorf("pass either --features or --service, not both")
	case req.Service != "":
		return repo.ResolveService(req.Service)
	case len(req.Features) > 0:
		return repo.ResolveRefs(req.Features)
	}
	return nil, requestErrorf("no features requested: pass --features view:feature,... or --service NAME")
}

func uploadFile(ctx context.Context, store *offline.Store, req Request, opt offline.EntityOptions) (*offline.EntitySet, error) {
	f, err := tablefile.DetectFormat(req.EntitiesFile, req.EntitiesFormat)
	if err != nil {
		return nil, &RequestError{err}
	}
	r, err := tablefile.Open(req.EntitiesFile, f, tablefile.ReadOptions{})
	if err != nil {
		return nil, &RequestError{err}
	}
	defer r.Close()
	opt.InferTypes = f == tablefile.CSV
	return store.UploadEntities(ctx, req.EntitiesFile, r, opt)
}

// WriteFile streams src into a temporary file beside path, written in
// format f with opt, and renames it into place only when complete, so a
// failed export leaves no partial file behind; progress, when set, is
// told the rows written so far.
func WriteFile(path string, f tablefile.Format, opt tablefile.WriteOptions, src offline.RecordSource, progress func(int64)) (int64, error) {
	var rows int64
	err := writeAtomically(path, func(out io.Writer) error {
		w, err := tablefile.NewWriter(out, f, src.Schema(), opt)
		if err != nil {
			return err
		}
		for {
			rec, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			err = w.Write(rec)
			rows += rec.NumRows()
			rec.Release()
			if err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if progress != nil {
				progress(rows)
			}
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return rows, nil
}

// writeAtomically has write fill a temporary file beside path and renames
// it into place only when write and the close succeed; otherwise the
// temporary file goes and path is untouched.
func writeAtomically(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return nil
}
