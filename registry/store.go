package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// chunkSize is how many bytes of an artifact one ClickHouse row holds.
const chunkSize = 1 << 20

// Version is one immutable registered version of a model.
type Version struct {
	Name     string
	Version  int64
	SHA256   string // of the ONNX bytes, hex
	Size     int64
	Spec     *Spec
	SpecYAML string
	SpecFile string
	// SpecDigest identifies the metadata; a version is its bytes and its
	// metadata.
	SpecDigest string
	CreatedAt  time.Time
	CreatedBy  string
	Archived   bool
	Aliases    []string
}

// Event is one entry of a model's audit trail.
type Event struct {
	At       time.Time
	Actor    string
	Action   string // register, alias, archive, restore
	Version  int64
	Alias    string
	Previous int64 // an alias's version before the move (0: none)
	Reason   string
}

// NotFoundError names a model, version or alias that does not exist.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }

// NotFound classifies the error (see featurestore/rpcerr).
func (e *NotFoundError) NotFound() bool { return true }

// ArchivedError is a version asked for by number that is archived: it
// exists, but is not served or scored until restored.
type ArchivedError struct {
	Name    string
	Version int64
}

func (e *ArchivedError) Error() string {
	return fmt.Sprintf("version %d of model %q is archived; restore it to use it (tailor models archive %s %d --restore)", e.Version, e.Name, e.Name, e.Version)
}

// FailedPrecondition classifies the error: the version exists but is not
// in a state to serve (see featurestore/rpcerr).
func (e *ArchivedError) FailedPrecondition() bool { return true }

// InvalidError is a request the registry refuses: a bad model, bad
// metadata, an archived version given an alias.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// InvalidInput marks a refused request as the caller's mistake.
func (e *InvalidError) InvalidInput() bool { return true }

// Store keeps models in ClickHouse: metadata rows, artifacts in chunks,
// and an event log from which aliases and archival are derived.
type Store struct {
	conn    driver.Conn
	db      string
	inspect Inspector
	log     *slog.Logger
	// mu serializes registrations and alias moves of this process, so
	// version numbers are assigned one at a time.
	mu sync.Mutex
}

// New opens the registry in database db, creating its tables if missing.
// inspect reads a model's graph for validation.
func New(ctx context.Context, conn driver.Conn, db string, inspect Inspector, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{conn: conn, db: db, inspect: inspect, log: log}
	q := "`" + strings.ReplaceAll(db, "`", "\\`") + "`"
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS ` + q + `.model_versions (
			name String, version UInt32, sha256 String, spec_digest String, size UInt64, task String,
			spec_yaml String, spec_file String, created_by String, created_at DateTime DEFAULT now(),
			_inserted_at DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY (name, version)`,
		`CREATE TABLE IF NOT EXISTS ` + q + `.model_artifacts (
			sha256 String, chunk UInt32, chunks UInt32, data String, _inserted_at DateTime DEFAULT now()
		) ENGINE = ReplacingMergeTree ORDER BY (sha256, chunk)`,
		`CREATE TABLE IF NOT EXISTS ` + q + `.model_events (
			name String, seq Int64, action String, version UInt32, alias String, previous_version UInt32,
			actor String, reason String, at DateTime DEFAULT now(), _inserted_at DateTime DEFAULT now()
		) ENGINE = MergeTree ORDER BY (name, seq)`,
	} {
		if err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create registry tables: %w", err)
		}
	}
	return s, nil
}

func (s *Store) table(name string) string {
	return "`" + strings.ReplaceAll(s.db, "`", "\\`") + "`." + name
}

// Register validates a model and stores it as a new version, unless the
// same bytes with the same metadata are already a version, which it
// returns with existing set. repo are the applied definitions the
// metadata's feature references must resolve in.
func (s *Store) Register(ctx context.Context, specFile string, specYAML, model []byte, repo *definitions.Repo, actor string) (v *Version, existing bool, err error) {
	spec, err := ValidateModel(specFile, specYAML, model, repo, s.inspect)
	if err != nil {
		return nil, false, err
	}
	if id := spec.Lineage["snapshot"]; id != "" {
		if err := s.checkSnapshot(ctx, id); err != nil {
			return nil, false, err
		}
	}
	sum := sha256.Sum256(model)
	sha := hex.EncodeToString(sum[:])
	digest := specDigest(specYAML)

	s.mu.Lock()
	defer s.mu.Unlock()
	versions, err := s.versions(ctx, spec.Name)
	if err != nil {
		return nil, false, err
	}
	next := int64(1)
	for _, old := range versions {
		if old.SHA256 == sha && old.SpecDigest == digest {
			return old, true, nil
		}
		next = max(next, old.Version+1)
	}
	if err := s.storeArtifact(ctx, sha, model); err != nil {
		return nil, false, err
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table("model_versions")+" (name, version, sha256, spec_digest, size, task, spec_yaml, spec_file, created_by)")
	if err != nil {
		return nil, false, fmt.Errorf("register %s: %w", spec.Name, err)
	}
	if err := b.Append(spec.Name, uint32(next), sha, digest, uint64(len(model)), spec.Task, string(specYAML), specFile, actor); err != nil {
		b.Abort()
		return nil, false, fmt.Errorf("register %s: %w", spec.Name, err)
	}
	if err := b.Send(); err != nil {
		return nil, false, fmt.Errorf("register %s: %w", spec.Name, err)
	}
	if err := s.event(ctx, Event{Actor: actor, Action: "register", Version: next}, spec.Name); err != nil {
		return nil, false, err
	}
	s.log.Info("model registered", "model", spec.Name, "version", next, "sha256", sha, "bytes", len(model), "actor", actor)
	v, err = s.Version(ctx, spec.Name, next)
	return v, false, err
}

// specDigest identifies metadata by its text.
func specDigest(yaml []byte) string {
	sum := sha256.Sum256(bytes.TrimSpace(yaml))
	return hex.EncodeToString(sum[:])
}

func (s *Store) storeArtifact(ctx context.Context, sha string, model []byte) error {
	var have uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.table("model_artifacts")+" WHERE sha256 = ?", sha).Scan(&have); err != nil {
		return fmt.Errorf("look up artifact %s: %w", sha, err)
	}
	chunks := (len(model) + chunkSize - 1) / chunkSize
	if int(have) == chunks {
		return nil // the same bytes are stored already
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table("model_artifacts")+" (sha256, chunk, chunks, data)")
	if err != nil {
		return fmt.Errorf("store artifact %s: %w", sha, err)
	}
	for i := 0; i < chunks; i++ {
		part := model[i*chunkSize : min((i+1)*chunkSize, len(model))]
		if err := b.Append(sha, uint32(i), uint32(chunks), string(part)); err != nil {
			b.Abort()
			return fmt.Errorf("store artifact %s: %w", sha, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("store artifact %s: %w", sha, err)
	}
	return nil
}

// Artifact returns a version's ONNX bytes, checked against its hash.
func (s *Store) Artifact(ctx context.Context, v *Version) ([]byte, error) {
	rows, err := s.conn.Query(ctx, "SELECT chunk, any(chunks), any(data) FROM "+s.table("model_artifacts")+" WHERE sha256 = ? GROUP BY chunk ORDER BY chunk", v.SHA256)
	if err != nil {
		return nil, fmt.Errorf("read artifact of %s:%d: %w", v.Name, v.Version, err)
	}
	defer rows.Close()
	var buf bytes.Buffer
	buf.Grow(int(v.Size))
	want := -1
	n := 0
	for rows.Next() {
		var chunk, chunks uint32
		var data string
		if err := rows.Scan(&chunk, &chunks, &data); err != nil {
			return nil, fmt.Errorf("read artifact of %s:%d: %w", v.Name, v.Version, err)
		}
		if int(chunk) != n {
			return nil, fmt.Errorf("artifact of %s:%d: chunk %d missing", v.Name, v.Version, n)
		}
		want = int(chunks)
		buf.WriteString(data)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read artifact of %s:%d: %w", v.Name, v.Version, err)
	}
	if n == 0 || n != want {
		return nil, fmt.Errorf("artifact of %s:%d: %d of %d chunks stored", v.Name, v.Version, n, want)
	}
	sum := sha256.Sum256(buf.Bytes())
	if got := hex.EncodeToString(sum[:]); got != v.SHA256 {
		return nil, fmt.Errorf("artifact of %s:%d is corrupt: sha256 %s, registered %s", v.Name, v.Version, got, v.SHA256)
	}
	return buf.Bytes(), nil
}

// event appends to a model's audit trail. seq orders events within a
// second (ClickHouse 18.16 has no sub-second DateTime).
func (s *Store) event(ctx context.Context, e Event, name string) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table("model_events")+" (name, seq, action, version, alias, previous_version, actor, reason)")
	if err != nil {
		return fmt.Errorf("record %s of %s: %w", e.Action, name, err)
	}
	if err := b.Append(name, time.Now().UnixNano(), e.Action, uint32(e.Version), e.Alias, uint32(e.Previous), e.Actor, e.Reason); err != nil {
		b.Abort()
		return fmt.Errorf("record %s of %s: %w", e.Action, name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record %s of %s: %w", e.Action, name, err)
	}
	return nil
}

// Events returns a model's audit trail, oldest first.
func (s *Store) Events(ctx context.Context, name string) ([]Event, error) {
	rows, err := s.conn.Query(ctx, "SELECT toUnixTimestamp(at), actor, action, version, alias, previous_version, reason FROM "+s.table("model_events")+" WHERE name = ? ORDER BY seq", name)
	if err != nil {
		return nil, fmt.Errorf("audit trail of %s: %w", name, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var at uint32
		var version, prev uint32
		var e Event
		if err := rows.Scan(&at, &e.Actor, &e.Action, &version, &e.Alias, &prev, &e.Reason); err != nil {
			return nil, fmt.Errorf("audit trail of %s: %w", name, err)
		}
		e.At, e.Version, e.Previous = time.Unix(int64(at), 0).UTC(), int64(version), int64(prev)
		out = append(out, e)
	}
	return out, rows.Err()
}

// state is what the event log says now: alias -> version, archived
// versions.
func state(events []Event) (aliases map[string]int64, archived map[int64]bool) {
	aliases, archived = map[string]int64{}, map[int64]bool{}
	for _, e := range events {
		switch e.Action {
		case "alias":
			aliases[e.Alias] = e.Version
		case "archive":
			archived[e.Version] = true
		case "restore":
			delete(archived, e.Version)
		}
	}
	return aliases, archived
}

// versions lists a model's versions, oldest first, with aliases and
// archival applied.
func (s *Store) versions(ctx context.Context, name string) ([]*Version, error) {
	rows, err := s.conn.Query(ctx, "SELECT name, version, sha256, spec_digest, size, spec_yaml, spec_file, created_by, toUnixTimestamp(created_at) FROM "+s.table("model_versions")+" WHERE name = ? ORDER BY version", name)
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", name, err)
	}
	defer rows.Close()
	var out []*Version
	for rows.Next() {
		var v Version
		var version uint32
		var size uint64
		var created uint32
		if err := rows.Scan(&v.Name, &version, &v.SHA256, &v.SpecDigest, &size, &v.SpecYAML, &v.SpecFile, &v.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("versions of %s: %w", name, err)
		}
		v.Version, v.Size, v.CreatedAt = int64(version), int64(size), time.Unix(int64(created), 0).UTC()
		if v.Spec, err = ParseSpec(v.SpecFile, []byte(v.SpecYAML)); err != nil {
			return nil, fmt.Errorf("stored metadata of %s:%d: %w", name, v.Version, err)
		}
		out = append(out, &v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("versions of %s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	events, err := s.Events(ctx, name)
	if err != nil {
		return nil, err
	}
	aliases, archived := state(events)
	for _, v := range out {
		v.Archived = archived[v.Version]
		for a, n := range aliases {
			if n == v.Version {
				v.Aliases = append(v.Aliases, a)
			}
		}
		sort.Strings(v.Aliases)
	}
	return out, nil
}

// Versions lists a model's versions, oldest first; an unknown model is a
// NotFoundError.
func (s *Store) Versions(ctx context.Context, name string) ([]*Version, error) {
	vs, err := s.versions(ctx, name)
	if err == nil && len(vs) == 0 {
		err = &NotFoundError{What: fmt.Sprintf("model %q", name)}
	}
	return vs, err
}

// Version returns one version of a model.
func (s *Store) Version(ctx context.Context, name string, version int64) (*Version, error) {
	vs, err := s.Versions(ctx, name)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if v.Version == version {
			return v, nil
		}
	}
	return nil, &NotFoundError{What: fmt.Sprintf("version %d of model %q", version, name)}
}

// Models returns every model's latest version, by name.
func (s *Store) Models(ctx context.Context) ([]*Version, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT name FROM "+s.table("model_versions")+" ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list models: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	var out []*Version
	for _, n := range names {
		vs, err := s.Versions(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, vs[len(vs)-1])
	}
	return out, nil
}

// Resolve finds the version a reference names: "name:version" (an
// *ArchivedError when that version is archived), "name@alias", or a bare
// name for its latest version that is not archived.
func (s *Store) Resolve(ctx context.Context, ref string) (*Version, error) {
	if name, alias, ok := strings.Cut(ref, "@"); ok {
		vs, err := s.Versions(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if slices.Contains(v.Aliases, alias) {
				return v, nil
			}
		}
		return nil, &NotFoundError{What: fmt.Sprintf("alias %q of model %q", alias, name)}
	}
	if name, num, ok := strings.Cut(ref, ":"); ok {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 {
			return nil, &InvalidError{fmt.Errorf("model reference %q: the version after ':' must be a positive number", ref)}
		}
		v, err := s.Version(ctx, name, n)
		if err != nil {
			return nil, err
		}
		if v.Archived {
			return nil, &ArchivedError{Name: name, Version: n}
		}
		return v, nil
	}
	vs, err := s.Versions(ctx, ref)
	if err != nil {
		return nil, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Archived {
			return vs[i], nil
		}
	}
	return nil, &NotFoundError{What: fmt.Sprintf("a version of model %q that is not archived", ref)}
}

// SetAlias points alias at a version and records the move; it returns
// the version the alias pointed at before (0: none).
func (s *Store) SetAlias(ctx context.Context, name, alias string, version int64, actor, reason string) (int64, error) {
	if !nameRE.MatchString(alias) {
		return 0, &InvalidError{fmt.Errorf("alias %q: use letters, digits, _ . - (not starting with a digit)", alias)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.Version(ctx, name, version)
	if err != nil {
		return 0, err
	}
	if v.Archived {
		return 0, &InvalidError{fmt.Errorf("version %d of model %q is archived; restore it before giving it an alias", version, name)}
	}
	events, err := s.Events(ctx, name)
	if err != nil {
		return 0, err
	}
	aliases, _ := state(events)
	prev := aliases[alias]
	if err := s.event(ctx, Event{Actor: actor, Action: "alias", Version: version, Alias: alias, Previous: prev, Reason: reason}, name); err != nil {
		return 0, err
	}
	s.log.Info("alias moved", "model", name, "alias", alias, "version", version, "previous", prev, "actor", actor)
	return prev, nil
}

// Archive archives a version (or restores it when archived is false). An
// archived version keeps no alias: archiving one that has aliases is
// refused, naming them.
func (s *Store) Archive(ctx context.Context, name string, version int64, archived bool, actor, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.Version(ctx, name, version)
	if err != nil {
		return err
	}
	if archived && len(v.Aliases) > 0 {
		return &InvalidError{fmt.Errorf("version %d of model %q is %s; move the alias(es) first", version, name, strings.Join(v.Aliases, ", "))}
	}
	action := "archive"
	if !archived {
		action = "restore"
	}
	return s.event(ctx, Event{Actor: actor, Action: action, Version: version, Reason: reason}, name)
}

// checkSnapshot makes sure a model's lineage names a recorded export
// snapshot (tailor export writes them to the snapshots table).
func (s *Store) checkSnapshot(ctx context.Context, id string) error {
	var n uint64
	err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.table("snapshots")+" WHERE snapshot_id = ?", id).Scan(&n)
	if err != nil {
		return fmt.Errorf("look up snapshot %s: %w", id, err)
	}
	if n == 0 {
		return &InvalidError{fmt.Errorf("lineage: snapshot %q is not a recorded export (tailor export prints and records each snapshot id)", id)}
	}
	return nil
}
