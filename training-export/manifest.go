package trainingexport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
)

// Manifest describes one export so that it can be traced and reproduced:
// the same snapshot gives the same bytes later, whatever rows arrived
// since.
type Manifest struct {
	SnapshotID string    `json:"snapshot_id"`
	CreatedAt  time.Time `json:"created_at"`
	// Watermark is the insertion time the views were read as of.
	Watermark          time.Time        `json:"watermark"`
	DefinitionsVersion uint64           `json:"definitions_version"`
	Service            string           `json:"service,omitempty"`
	Features           []ManifestColumn `json:"features"`
	FullNames          bool             `json:"full_names,omitempty"`
	Entities           EntitySource     `json:"entities"`
	Rows               int64            `json:"rows"`
	// TimeRange is the earliest and latest entity timestamp.
	TimeRange [2]time.Time `json:"time_range"`
	File      string       `json:"file"`
	Format    string       `json:"format"`
	// Compression is a Parquet file's compression (zstd, snappy or
	// none); empty for other formats. A manifest written before it was
	// recorded describes a zstd Parquet file.
	Compression string `json:"compression,omitempty"`
	// ContentSHA256 is the hash of the exported file's bytes.
	ContentSHA256 string `json:"content_sha256"`
	// Model is the model version a scoring run used (name:version).
	Model string `json:"model,omitempty"`
	// At is the instant a scoring run scored at.
	At *time.Time `json:"at,omitempty"`
	// Unversioned lists views read as they were, not as of the watermark
	// (external tables without insertion times): a reproduction may
	// differ where they changed.
	Unversioned   []string `json:"unversioned_views,omitempty"`
	TailorVersion string   `json:"tailor_version"`
}

// ManifestColumn is one exported feature.
type ManifestColumn struct {
	Ref    string `json:"ref"`
	Type   string `json:"type"`
	Column string `json:"column"`
}

// EntitySource says where the entity rows came from.
type EntitySource struct {
	// Kind is "file" (a file on the exporting machine, at Path), "upload"
	// (a file a client sent the ExportService, named Path), "inline"
	// (rows sent in the request, kept in Content as CSV) or "sql".
	Kind            string `json:"kind"`
	Path            string `json:"path,omitempty"`
	Format          string `json:"format,omitempty"`
	SHA256          string `json:"sha256,omitempty"`
	SQL             string `json:"sql,omitempty"`
	TimestampColumn string `json:"timestamp_column,omitempty"`
	// Content holds inline entity rows (CSV), so the manifest alone
	// reproduces the export.
	Content string `json:"content,omitempty"`
}

// maxInlineContent bounds the inline entity rows a manifest carries.
const maxInlineContent = 4 << 20

// ManifestPath is where an export's manifest is written: beside it.
func ManifestPath(out string) string { return out + ".manifest.json" }

// LoadManifest reads a manifest file.
func LoadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	if m.SnapshotID == "" || m.Watermark.IsZero() || m.DefinitionsVersion == 0 {
		return nil, fmt.Errorf("manifest %s: not a tailor export manifest (no snapshot id, watermark or definitions version)", path)
	}
	return &m, nil
}

// write stores the manifest beside the export (atomically) and in
// ClickHouse.
func (m *Manifest) write(ctx context.Context, store *offline.Store, out string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	path := ManifestPath(out)
	tmp := path + ".tmp"
	if out == "" {
		return m.record(ctx, store, b)
	}
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write manifest: %w", err)
	}
	return m.record(ctx, store, b)
}

// record keeps the manifest in ClickHouse.
func (m *Manifest) record(ctx context.Context, store *offline.Store, b []byte) error {
	batch, err := store.Conn().PrepareBatch(ctx, "INSERT INTO `"+store.Database()+"`.snapshots (snapshot_id, manifest)")
	if err != nil {
		return fmt.Errorf("record snapshot %s: %w", m.SnapshotID, err)
	}
	if err := batch.Append(m.SnapshotID, string(b)); err != nil {
		batch.Abort()
		return fmt.Errorf("record snapshot %s: %w", m.SnapshotID, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record snapshot %s: %w", m.SnapshotID, err)
	}
	return nil
}

// newSnapshotID names a snapshot by its time and randomness.
func newSnapshotID(at time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "snap-" + at.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// fileSHA256 hashes a file's bytes.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tailorVersion is the module version and VCS revision of this binary.
func tailorVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v
}

// MismatchError is a reproduction whose bytes differ from the manifest's.
type MismatchError struct{ Want, Got string }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the reproduced export's sha256 is %s, the manifest's %s", e.Got, e.Want)
}

// FailedPrecondition classifies the error: the snapshot's data changed
// since (see featurestore/rpcerr).
func (e *MismatchError) FailedPrecondition() bool { return true }

// Reproduce exports a manifest's snapshot again into out: the same
// definitions version, entity rows, features, format (and Parquet
// compression) and watermark. The entity rows are the manifest's own (SQL,
// inline rows, the recorded file) or entities, a file whose sha256 must be
// the recorded one (required for rows a client uploaded). A streamed
// export is reproduced as the same Arrow IPC stream bytes. An entity file
// that changed since, or a result whose bytes differ, is an error.
func Reproduce(ctx context.Context, store *offline.Store, m *Manifest, out, entities string, progress func(stage string, rows int64)) (Result, error) {
	// The same bytes come only in the same format: an output named for
	// another one would hold what its name does not say.
	if f, err := tablefile.DetectFormat(out, ""); err == nil {
		switch {
		case m.Format == StreamFormat && f != tablefile.Arrow:
			// A streamed export reproduces as the Arrow IPC stream.
			return Result{}, fmt.Errorf("snapshot %s was streamed (Arrow IPC stream): reproduce it into a .arrows file (%s would be %s)", m.SnapshotID, out, f)
		case m.Format != StreamFormat && string(f) != m.Format:
			return Result{}, fmt.Errorf("snapshot %s was exported as %s: reproduce it into a .%s file (%s would be %s)", m.SnapshotID, m.Format, m.Format, out, f)
		}
	}
	av, err := store.AppliedAt(ctx, m.DefinitionsVersion)
	if err != nil {
		return Result{}, err
	}
	if av == nil {
		return Result{}, fmt.Errorf("snapshot %s: definitions version %d is not in the store", m.SnapshotID, m.DefinitionsVersion)
	}
	req := Request{
		Out: out, Format: m.Format, Compression: m.Compression, FullNames: m.FullNames, TimestampColumn: m.Entities.TimestampColumn,
		Progress: progress, DefinitionsVersion: m.DefinitionsVersion, Watermark: m.Watermark, SnapshotID: m.SnapshotID,
	}
	for _, c := range m.Features {
		req.Features = append(req.Features, c.Ref)
	}
	switch m.Entities.Kind {
	case "sql":
		if entities != "" {
			return Result{}, fmt.Errorf("snapshot %s: its entity rows come from a query; --entities does not apply", m.SnapshotID)
		}
		req.EntitiesSQL = m.Entities.SQL
	case "inline":
		if m.Entities.Content == "" {
			return Result{}, fmt.Errorf("snapshot %s: its inline entity rows were too large to keep in the manifest", m.SnapshotID)
		}
		tmp, err := os.CreateTemp("", "tailor-inline-*.csv")
		if err != nil {
			return Result{}, err
		}
		defer os.Remove(tmp.Name())
		_, err = tmp.WriteString(m.Entities.Content)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return Result{}, err
		}
		entities = tmp.Name()
		fallthrough
	case "file", "upload":
		if entities == "" && m.Entities.Kind == "upload" {
			return Result{}, fmt.Errorf("snapshot %s: its entity rows were uploaded by a client (%s, sha256 %s): pass that file with --entities", m.SnapshotID, m.Entities.Path, m.Entities.SHA256)
		}
		differs := "is not the one exported"
		if entities == "" {
			entities, differs = m.Entities.Path, "changed since the export"
		}
		sum, err := fileSHA256(entities)
		if err != nil {
			return Result{}, fmt.Errorf("snapshot %s: entity file: %w", m.SnapshotID, err)
		}
		if sum != m.Entities.SHA256 {
			return Result{}, fmt.Errorf("snapshot %s: entity file %s %s (sha256 %s, recorded %s)", m.SnapshotID, entities, differs, sum, m.Entities.SHA256)
		}
		req.EntitiesFile, req.EntitiesFormat = entities, m.Entities.Format
		if m.Entities.Kind != "file" {
			// The reproduction records the same source as the original.
			req.EntitiesUpload, req.InlineEntities = m.Entities.Path, m.Entities.Kind == "inline"
			if req.EntitiesUpload == "" {
				req.EntitiesUpload = m.Entities.Kind
			}
		}
	default:
		return Result{}, fmt.Errorf("snapshot %s: unknown entity source %q", m.SnapshotID, m.Entities.Kind)
	}
	var res Result
	if m.Format == StreamFormat {
		res, err = reproduceStream(ctx, store, av.Repo, req, out)
	} else {
		res, err = Export(ctx, store, av.Repo, req)
	}
	if err != nil {
		return res, err
	}
	if res.Manifest.ContentSHA256 != m.ContentSHA256 {
		err := &MismatchError{Want: m.ContentSHA256, Got: res.Manifest.ContentSHA256}
		if len(m.Unversioned) > 0 {
			return res, fmt.Errorf("%w (views without insertion times, read as they are now: %v)", err, m.Unversioned)
		}
		return res, err
	}
	return res, nil
}

// reproduceStream writes a streamed export again, as the same Arrow IPC
// stream bytes, into the file out (which appears only once complete).
func reproduceStream(ctx context.Context, store *offline.Store, repo *definitions.Repo, req Request, out string) (Result, error) {
	var res Result
	err := writeAtomically(out, func(f io.Writer) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		var err error
		if res, err = ExportStream(ctx, store, repo, req, bw); err != nil {
			return err
		}
		return bw.Flush()
	})
	return res, err
}

// manifestFor fills what the export knows once it is written.
func manifestFor(req Request, refs []definitions.FeatureRef, set *offline.EntitySet, format string, rows int64, watermark time.Time, contentSHA string) (*Manifest, error) {
	now := time.Now().UTC()
	m := &Manifest{
		SnapshotID: req.SnapshotID, CreatedAt: now, Watermark: watermark, DefinitionsVersion: req.DefinitionsVersion,
		Service: req.Service, FullNames: req.FullNames, Rows: rows, Format: format, Compression: req.Compression,
		TailorVersion: tailorVersion(), ContentSHA256: contentSHA,
	}
	if req.Out != "" {
		m.File = filepath.Base(req.Out)
	}
	if m.SnapshotID == "" {
		m.SnapshotID = newSnapshotID(now)
	}
	for _, r := range refs {
		m.Features = append(m.Features, ManifestColumn{Ref: r.String(), Type: string(r.Type), Column: offline.OutputName(r, req.FullNames)})
	}
	m.TimeRange[0], m.TimeRange[1] = set.TimeRange()
	m.Entities.TimestampColumn = req.TimestampColumn
	switch {
	case req.EntitiesSQL != "":
		m.Entities.Kind, m.Entities.SQL = "sql", req.EntitiesSQL
	case req.EntitiesUpload != "":
		sum, err := fileSHA256(req.EntitiesFile)
		if err != nil {
			return nil, fmt.Errorf("entity rows: %w", err)
		}
		m.Entities.Kind, m.Entities.Path, m.Entities.Format, m.Entities.SHA256 = "upload", req.EntitiesUpload, req.EntitiesFormat, sum
		if req.InlineEntities {
			m.Entities.Kind, m.Entities.Path = "inline", ""
			if st, err := os.Stat(req.EntitiesFile); err == nil && st.Size() <= maxInlineContent {
				b, err := os.ReadFile(req.EntitiesFile)
				if err != nil {
					return nil, fmt.Errorf("entity rows: %w", err)
				}
				m.Entities.Content = string(b)
			}
		}
	default:
		abs, err := filepath.Abs(req.EntitiesFile)
		if err != nil {
			return nil, err
		}
		sum, err := fileSHA256(req.EntitiesFile)
		if err != nil {
			return nil, fmt.Errorf("entity file: %w", err)
		}
		m.Entities.Kind, m.Entities.Path, m.Entities.Format, m.Entities.SHA256 = "file", abs, req.EntitiesFormat, sum
	}
	return m, nil
}
