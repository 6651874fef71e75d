// Package exportserver implements the Connect ExportService: point-in-time
// training sets streamed to clients as Arrow IPC.
package exportserver

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	exportv1 "github.com/tailorhq/tailor/proto/gen/tailor/export/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	trainingexport "github.com/tailorhq/tailor/training-export"
)

// chunkBytes is how many bytes of the Arrow stream one message carries.
const chunkBytes = 1 << 20

// Server is the ExportService handler.
type Server struct {
	exportv1connect.UnimplementedExportServiceHandler

	store *offline.Store
	defs  func() *offline.AppliedVersion
	log   *slog.Logger
}

// New returns the handler; defs returns the applied definitions.
func New(store *offline.Store, defs func() *offline.AppliedVersion, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{store: store, defs: defs, log: log}
}

// chunker sends what is written to it as stream messages of chunkBytes.
type chunker struct {
	stream *connect.ServerStream[exportv1.ExportTrainingSetResponse]
	buf    []byte
}

func (c *chunker) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	for len(c.buf) >= chunkBytes {
		if err := c.flush(chunkBytes); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *chunker) flush(n int) error {
	if n == 0 {
		return nil
	}
	err := c.stream.Send(&exportv1.ExportTrainingSetResponse{Part: &exportv1.ExportTrainingSetResponse_Arrow{Arrow: c.buf[:n:n]}})
	c.buf = append([]byte(nil), c.buf[n:]...)
	return err
}

// ExportTrainingSet streams a training set.
func (s *Server) ExportTrainingSet(ctx context.Context, req *connect.Request[exportv1.ExportTrainingSetRequest], stream *connect.ServerStream[exportv1.ExportTrainingSetResponse]) error {
	av := s.defs()
	if av == nil || av.Version == 0 {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("no definitions applied"))
	}
	m := req.Msg
	r := trainingexport.Request{
		Features: m.GetFeatures(), Service: m.GetFeatureService(), FullNames: m.GetFullNames(),
		TimestampColumn: m.GetTimestampColumn(), DefinitionsVersion: av.Version,
	}
	if r.TimestampColumn == "" {
		r.TimestampColumn = offline.DefaultTimestampColumn
	}
	switch e := m.GetEntities().(type) {
	case *exportv1.ExportTrainingSetRequest_Sql:
		r.EntitiesSQL = e.Sql
	case *exportv1.ExportTrainingSetRequest_File:
		path, err := tempFile(e.File.GetContent(), e.File.GetFormat())
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		defer os.Remove(path)
		r.EntitiesFile, r.EntitiesFormat, r.EntitiesUpload = path, e.File.GetFormat(), e.File.GetName()
		if r.EntitiesUpload == "" {
			r.EntitiesUpload = "upload"
		}
	case *exportv1.ExportTrainingSetRequest_Inline:
		content, err := inlineCSV(e.Inline.GetRows())
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, err)
		}
		path, err := tempFile(content, "csv")
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		defer os.Remove(path)
		r.EntitiesFile, r.EntitiesFormat, r.EntitiesUpload, r.InlineEntities = path, "csv", "inline", true
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("no entity rows: give inline rows, a file or a SQL query"))
	}
	c := &chunker{stream: stream}
	res, err := trainingexport.ExportStream(ctx, s.store, av.Repo, r, c)
	if err != nil {
		if code := rpcerr.Code(ctx, err); code == connect.CodeInternal {
			s.log.Error("export failed", "err", err)
		}
		return rpcerr.Error(ctx, err)
	}
	if err := c.flush(len(c.buf)); err != nil {
		return err
	}
	b, err := json.Marshal(res.Manifest)
	if err != nil {
		return err
	}
	s.log.Info("streamed export", "snapshot", res.Manifest.SnapshotID, "rows", res.Rows, "took", res.Duration)
	return stream.Send(&exportv1.ExportTrainingSetResponse{Part: &exportv1.ExportTrainingSetResponse_ManifestJson{ManifestJson: string(b)}})
}

func tempFile(content []byte, format string) (string, error) {
	ext := map[string]string{"csv": ".csv", "parquet": ".parquet", "arrow": ".arrow"}[format]
	f, err := os.CreateTemp("", "tailor-entities-*"+ext)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return filepath.Clean(f.Name()), f.Close()
}

// inlineCSV writes inline rows as CSV, columns in name order; the upload
// infers their types as it does for any CSV file.
func inlineCSV(rows []*exportv1.InlineRow) ([]byte, error) {
	if len(rows) == 0 {
		return nil, errors.New("no inline entity rows")
	}
	seen := map[string]bool{}
	var cols []string
	for _, r := range rows {
		for k := range r.GetValues() {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	sort.Strings(cols)
	var out bytes.Buffer
	w := csv.NewWriter(&out)
	_ = w.Write(cols)
	for i, r := range rows {
		rec := make([]string, len(cols))
		for j, c := range cols {
			v, ok := r.GetValues()[c]
			if !ok || v.GetKind() == nil {
				continue
			}
			text, err := cell(v)
			if err != nil {
				return nil, fmt.Errorf("inline row %d, column %q: %w", i, c, err)
			}
			rec[j] = text
		}
		_ = w.Write(rec)
	}
	w.Flush()
	return out.Bytes(), w.Error()
}

func cell(v *featurestorev1.Value) (string, error) {
	switch x := v.GetKind().(type) {
	case *featurestorev1.Value_StringValue:
		return x.StringValue, nil
	case *featurestorev1.Value_Int64Value:
		return strconv.FormatInt(x.Int64Value, 10), nil
	case *featurestorev1.Value_Int32Value:
		return strconv.FormatInt(int64(x.Int32Value), 10), nil
	case *featurestorev1.Value_Float64Value:
		return strconv.FormatFloat(x.Float64Value, 'g', -1, 64), nil
	case *featurestorev1.Value_Float32Value:
		return strconv.FormatFloat(float64(x.Float32Value), 'g', -1, 32), nil
	case *featurestorev1.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue), nil
	case *featurestorev1.Value_TimestampValue:
		return x.TimestampValue.AsTime().UTC().Format(time.RFC3339Nano), nil
	}
	return "", fmt.Errorf("%T cannot be an entity column", v.GetKind())
}
