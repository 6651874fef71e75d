package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// Change is one difference between the applied definitions and new ones.
type Change struct {
	// Action is "add", "change" or "remove".
	Action string
	// Object names what changes, e.g. `feature_view "customer_stats"`.
	Object string
	// Detail says how, in words a reviewer reads.
	Detail string
	// DDL are the ClickHouse statements apply runs for this change.
	DDL []string
}

// Plan is what Apply would do: the changes, and the version they produce.
type Plan struct {
	// FromVersion is the applied version the plan starts from (0: none).
	FromVersion uint64
	// Digest identifies the new definitions.
	Digest string
	// Changes in the order they are applied.
	Changes []Change
}

// String renders the plan the way `tailor plan` prints it.
func (p *Plan) String() string {
	if len(p.Changes) == 0 {
		return "No changes: the applied definitions are up to date.\n"
	}
	var b strings.Builder
	sym := map[string]string{"add": "+", "change": "~", "remove": "-"}
	for _, c := range p.Changes {
		fmt.Fprintf(&b, "%s %s", sym[c.Action], c.Object)
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", c.Detail)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%d change(s)\n", len(p.Changes))
	return b.String()
}

// AppliedVersion is one stored version of the definitions.
type AppliedVersion struct {
	Version   uint64
	Digest    string
	AppliedAt time.Time
	AppliedBy string
	Repo      *definitions.Repo
}

// Applied returns the latest applied definitions, or nil when nothing was
// ever applied.
func (s *Store) Applied(ctx context.Context) (*AppliedVersion, error) {
	return s.applied(ctx, "ORDER BY version DESC LIMIT 1")
}

// AppliedAt returns one applied version of the definitions, or nil when
// there is no such version.
func (s *Store) AppliedAt(ctx context.Context, version uint64) (*AppliedVersion, error) {
	return s.applied(ctx, fmt.Sprintf("WHERE version = %d LIMIT 1", version))
}

func (s *Store) applied(ctx context.Context, clause string) (*AppliedVersion, error) {
	rows, err := s.conn.Query(ctx, fmt.Sprintf(
		"SELECT version, digest, repo_json, applied_at, applied_by FROM %s.definitions %s", QuoteIdent(s.db), clause))
	if err != nil {
		return nil, fmt.Errorf("read applied definitions: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var av AppliedVersion
	var js string
	if err := rows.Scan(&av.Version, &av.Digest, &js, &av.AppliedAt, &av.AppliedBy); err != nil {
		return nil, fmt.Errorf("read applied definitions: %w", err)
	}
	av.Repo = new(definitions.Repo)
	if err := json.Unmarshal([]byte(js), av.Repo); err != nil {
		return nil, fmt.Errorf("decode applied definitions version %d: %w", av.Version, err)
	}
	return &av, nil
}

// LatestVersion returns the number of the latest applied definitions (0:
// none), a cheap query for servers watching for new definitions.
func (s *Store) LatestVersion(ctx context.Context) (uint64, error) {
	var v uint64
	if err := s.conn.QueryRow(ctx, fmt.Sprintf("SELECT max(version) FROM %s.definitions", QuoteIdent(s.db))).Scan(&v); err != nil {
		return 0, fmt.Errorf("read definitions version: %w", err)
	}
	return v, nil
}

// Plan compares repo with the applied definitions and the tables in
// ClickHouse, and returns what Apply would change. It changes nothing.
// Changes that would break stored data (a key or a type) are refused with
// errors naming the definition's file:line.
func (s *Store) Plan(ctx context.Context, repo *definitions.Repo) (*Plan, error) {
	prev, err := s.Applied(ctx)
	if err != nil {
		return nil, err
	}
	p := &Plan{Digest: repo.Digest()}
	old := &definitions.Repo{}
	if prev != nil {
		p.FromVersion = prev.Version
		old = prev.Repo
	}
	var errs []error
	refuse := func(pos definitions.Pos, object, format string, args ...any) {
		errs = append(errs, &definitions.Error{Pos: pos, Object: object, Msg: fmt.Sprintf(format, args...)})
	}

	for i := range repo.Entities {
		e := &repo.Entities[i]
		obj := fmt.Sprintf("entity %q", e.Name)
		oe, ok := old.Entity(e.Name)
		switch {
		case !ok:
			p.Changes = append(p.Changes, Change{Action: "add", Object: obj, Detail: fmt.Sprintf("join key %s (%s)", e.JoinKey, e.Type)})
		case oe.JoinKey != e.JoinKey:
			refuse(e.Pos, obj, "join key cannot change from %q to %q: stored feature rows are keyed by %q; define a new entity instead", oe.JoinKey, e.JoinKey, oe.JoinKey)
		case oe.Type != e.Type:
			refuse(e.Pos, obj, "join key type cannot change from %s to %s: stored feature rows are keyed by %s values; define a new entity instead", oe.Type, e.Type, oe.Type)
		case oe.Description != e.Description:
			p.Changes = append(p.Changes, Change{Action: "change", Object: obj, Detail: "description"})
		}
	}
	for _, oe := range old.Entities {
		if _, ok := repo.Entity(oe.Name); !ok {
			p.Changes = append(p.Changes, Change{Action: "remove", Object: fmt.Sprintf("entity %q", oe.Name)})
		}
	}

	for i := range repo.FeatureViews {
		v := &repo.FeatureViews[i]
		ch, verrs := s.planView(ctx, repo, v, old)
		errs = append(errs, verrs...)
		p.Changes = append(p.Changes, ch...)
	}
	for _, ov := range old.FeatureViews {
		if _, ok := repo.View(ov.Name); !ok {
			detail := "definition removed; its table and rows are kept"
			p.Changes = append(p.Changes, Change{Action: "remove", Object: fmt.Sprintf("feature_view %q", ov.Name), Detail: detail})
		}
	}

	for _, fs := range repo.FeatureServices {
		obj := fmt.Sprintf("feature_service %q", fs.Name)
		ofs, ok := old.Service(fs.Name)
		switch {
		case !ok:
			p.Changes = append(p.Changes, Change{Action: "add", Object: obj, Detail: strings.Join(fs.Features, ", ")})
		case strings.Join(ofs.Features, ",") != strings.Join(fs.Features, ","):
			p.Changes = append(p.Changes, Change{Action: "change", Object: obj, Detail: fmt.Sprintf("features %s -> %s", strings.Join(ofs.Features, ", "), strings.Join(fs.Features, ", "))})
		case ofs.Description != fs.Description:
			p.Changes = append(p.Changes, Change{Action: "change", Object: obj, Detail: "description"})
		}
	}
	for _, ofs := range old.FeatureServices {
		if _, ok := repo.Service(ofs.Name); !ok {
			p.Changes = append(p.Changes, Change{Action: "remove", Object: fmt.Sprintf("feature_service %q", ofs.Name)})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if prev != nil && prev.Digest != p.Digest && len(p.Changes) == 0 {
		// The digest ignores positions, so something the diff above does not
		// itemise changed: a feature's description.
		p.Changes = append(p.Changes, Change{Action: "change", Object: "definitions", Detail: "descriptions"})
	}
	return p, nil
}

// planView plans one feature view: its table's DDL and how its definition
// differs from the applied one.
func (s *Store) planView(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, old *definitions.Repo) ([]Change, []error) {
	obj := fmt.Sprintf("feature_view %q", v.Name)
	var errs []error
	refuse := func(pos definitions.Pos, format string, args ...any) {
		errs = append(errs, &definitions.Error{Pos: pos, Object: obj, Msg: fmt.Sprintf(format, args...)})
	}
	var changes []Change

	ov, existed := old.View(v.Name)
	if existed {
		oldKeys, newKeys := keyList(old, ov), keyList(repo, v)
		if oldKeys != newKeys {
			refuse(v.Pos, "entity key cannot change from (%s) to (%s): stored rows are keyed by (%s); define a new feature view instead", oldKeys, newKeys, oldKeys)
		}
		if ov.External() != v.External() || ov.Source.Table != v.Source.Table {
			refuse(v.Pos, "source table cannot change from %q to %q: define a new feature view instead", sourceName(ov), sourceName(v))
		}
		if ov.Source.TimestampField != v.Source.TimestampField {
			refuse(v.Pos, "timestamp_field cannot change from %q to %q", ov.Source.TimestampField, v.Source.TimestampField)
		}
		for _, f := range v.Features {
			if of, ok := ov.Feature(f.Name); ok && of.Type != f.Type {
				refuse(f.Pos, "feature %q cannot change type from %s to %s: stored values are %s; add a feature with a new name instead", f.Name, of.Type, f.Type, of.Type)
			}
		}
	}

	table := s.viewTable(v)
	cols, exists, err := s.tableColumns(ctx, table)
	if err != nil {
		return nil, []error{err}
	}
	have := map[string]string{}
	for _, c := range cols {
		have[c.Name] = c.Type
	}

	if v.External() {
		if !exists {
			refuse(v.Pos, "source table %s does not exist in ClickHouse", table.Plain())
			return nil, errs
		}
		check := func(pos definitions.Pos, name string, ok func(string) bool, want string) {
			t, found := have[name]
			switch {
			case !found:
				refuse(pos, "source table %s has no column %q (%s)", table.Plain(), name, want)
			case !ok(t):
				refuse(pos, "source table %s column %q is %s, which cannot hold %s", table.Plain(), name, t, want)
			}
		}
		for _, e := range repo.JoinKeys(v) {
			check(v.Pos, e.JoinKey, func(t string) bool { return compatible(e.Type, t) }, fmt.Sprintf("join key of entity %q, %s", e.Name, e.Type))
		}
		check(v.Pos, v.Source.TimestampField, timestampCompatible, "the event timestamp, DateTime")
		if cf := CreatedColumn(v); cf != "" {
			check(v.Pos, cf, timestampCompatible, "the created timestamp, DateTime")
		}
		for _, f := range v.Features {
			if f.Agg == nil {
				check(f.Pos, f.Name, func(t string) bool { return compatible(f.Type, t) }, fmt.Sprintf("feature %q, %s", f.Name, f.Type))
				continue
			}
			if f.Agg.Column != "" {
				check(f.Pos, f.Agg.Column, func(t string) bool { return aggCompatible(f, t) }, fmt.Sprintf("the column of aggregation %q, %s %s", f.Name, f.Agg.Function, f.Type))
			}
			if f.Agg.Where != "" {
				// ClickHouse judges the expression: analysing it on no rows
				// finds unknown columns, bad syntax and type errors.
				q := fmt.Sprintf("SELECT count() FROM (SELECT * FROM %s LIMIT 0) WHERE (%s)", table, f.Agg.Where)
				if err := s.conn.Exec(ctx, q); err != nil {
					refuse(f.Pos, "aggregation %q: where %q does not work on %s: %v", f.Name, f.Agg.Where, table.Plain(), chMessage(err))
				}
			}
		}
	} else if exists {
		// The table outlived an earlier definition, or is the applied one:
		// every column it has must fit, and missing features are added.
		want := map[string]string{v.Source.TimestampField: "DateTime", CreatedColumn(v): "DateTime"}
		for _, e := range repo.JoinKeys(v) {
			want[e.JoinKey] = chKeyType(e.Type)
		}
		for _, f := range v.Features {
			want[f.Name] = chType(f.Type)
		}
		for _, f := range v.Features {
			t, ok := have[f.Name]
			if !ok {
				ddl := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", table, QuoteIdent(f.Name), chType(f.Type))
				changes = append(changes, Change{Action: "add", Object: obj, Detail: fmt.Sprintf("feature %s %s (adds column %s.%s)", f.Name, f.Type, table.Plain(), f.Name), DDL: []string{ddl}})
				continue
			}
			if t != chType(f.Type) {
				refuse(f.Pos, "feature %q is %s but table %s already has column %q as %s; add a feature with a new name instead", f.Name, f.Type, table.Plain(), f.Name, t)
			}
		}
		for name, w := range want {
			if _, isFeature := v.Feature(name); isFeature {
				continue
			}
			t, ok := have[name]
			switch {
			case !ok:
				refuse(v.Pos, "table %s has no column %q: it was created for a different key; define a new feature view instead", table.Plain(), name)
			case t != w:
				refuse(v.Pos, "table %s column %q is %s but the definition needs %s: the key or timestamp cannot change; define a new feature view instead", table.Plain(), name, t, w)
			}
		}
	}

	switch {
	case !existed:
		detail := fmt.Sprintf("%d feature(s) keyed by (%s), ttl %s", len(v.Features), keyList(repo, v), ttlText(v.TTL))
		var ddl []string
		if !v.External() && !exists {
			ddl = append(ddl, createTableSQL(table, repo, v))
			detail += ", creates table " + table.Plain()
		} else {
			detail += ", reads table " + table.Plain()
		}
		changes = append([]Change{{Action: "add", Object: obj, Detail: detail, DDL: ddl}}, changes...)
	default:
		if !v.External() && !exists {
			changes = append(changes, Change{Action: "add", Object: obj, Detail: "re-creates missing table " + table.Plain(), DDL: []string{createTableSQL(table, repo, v)}})
		}
		if v.External() {
			for _, f := range v.Features {
				if _, ok := ov.Feature(f.Name); !ok {
					changes = append(changes, Change{Action: "add", Object: obj, Detail: fmt.Sprintf("feature %s %s (column of %s)", f.Name, f.Type, table.Plain())})
				}
			}
		}
		for _, of := range ov.Features {
			if _, ok := v.Feature(of.Name); !ok {
				changes = append(changes, Change{Action: "remove", Object: obj, Detail: fmt.Sprintf("feature %s (its column and values are kept)", of.Name)})
			}
		}
		if ov.TTL != v.TTL {
			changes = append(changes, Change{Action: "change", Object: obj, Detail: fmt.Sprintf("ttl %s -> %s", ttlText(ov.TTL), ttlText(v.TTL))})
		}
		if !maps.Equal(ov.Tags, v.Tags) {
			changes = append(changes, Change{Action: "change", Object: obj, Detail: "tags"})
		}
		if ov.Description != v.Description {
			changes = append(changes, Change{Action: "change", Object: obj, Detail: "description"})
		}
		if CreatedColumn(ov) != CreatedColumn(v) {
			changes = append(changes, Change{Action: "change", Object: obj, Detail: fmt.Sprintf("created_timestamp_field %q -> %q", CreatedColumn(ov), CreatedColumn(v))})
		}
		if featureOrder(ov) != featureOrder(v) && len(ov.Features) == len(v.Features) {
			changes = append(changes, Change{Action: "change", Object: obj, Detail: "feature order"})
		}
	}
	return changes, errs
}

func keyList(repo *definitions.Repo, v *definitions.FeatureView) string {
	var parts []string
	for _, e := range repo.JoinKeys(v) {
		parts = append(parts, e.JoinKey+" "+string(e.Type))
	}
	return strings.Join(parts, ", ")
}

func featureOrder(v *definitions.FeatureView) string {
	var names []string
	for _, f := range v.Features {
		names = append(names, f.Name)
	}
	return strings.Join(names, ",")
}

func sourceName(v *definitions.FeatureView) string {
	if v.External() {
		return v.Source.Table
	}
	return "(tailor-owned)"
}

func ttlText(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

// Apply makes ClickHouse match repo: it plans, runs the DDL of each change
// and stores repo as a new definitions version. Applying the same
// definitions twice changes nothing and returns the same version.
func (s *Store) Apply(ctx context.Context, repo *definitions.Repo, appliedBy string) (*Plan, uint64, error) {
	p, err := s.Plan(ctx, repo)
	if err != nil {
		return nil, 0, err
	}
	if len(p.Changes) == 0 {
		return p, p.FromVersion, nil
	}
	for _, c := range p.Changes {
		for _, q := range c.DDL {
			if err := s.conn.Exec(ctx, q); err != nil {
				return nil, 0, fmt.Errorf("apply %s: %w", c.Object, err)
			}
		}
	}
	js, err := json.Marshal(repo)
	if err != nil {
		return nil, 0, fmt.Errorf("encode definitions: %w", err)
	}
	version := p.FromVersion + 1
	summary := strings.TrimSpace(p.String())
	q := fmt.Sprintf("INSERT INTO %s.definitions (version, digest, repo_json, applied_at, applied_by, summary) VALUES (?, ?, ?, ?, ?, ?)", QuoteIdent(s.db))
	b, err := s.conn.PrepareBatch(ctx, q)
	if err != nil {
		return nil, 0, fmt.Errorf("store definitions version %d: %w", version, err)
	}
	if err := b.Append(version, p.Digest, string(js), time.Now().UTC().Truncate(time.Second), appliedBy, summary); err != nil {
		return nil, 0, fmt.Errorf("store definitions version %d: %w", version, err)
	}
	if err := b.Send(); err != nil {
		return nil, 0, fmt.Errorf("store definitions version %d: %w", version, err)
	}
	s.log.Info("definitions applied", "version", version, "changes", len(p.Changes), "digest", p.Digest)
	return p, version, nil
}
