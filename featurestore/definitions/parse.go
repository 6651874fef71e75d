package definitions

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one problem in the definitions, at the place it was written.
type Error struct {
	Pos    Pos
	Object string // e.g. `feature_view "customer_stats"`; empty for file-level problems
	Msg    string
}

func (e *Error) Error() string {
	if e.Object == "" {
		return fmt.Sprintf("%s: %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.Pos, e.Object, e.Msg)
}

// InvalidInput marks a problem in definitions as the caller's mistake.
func (e *Error) InvalidInput() bool { return true }

// Load reads every *.yaml and *.yml file under dir (recursively, in path
// order) and returns the validated definitions, or every problem found.
func Load(dir string) (*Repo, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files[path] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read definitions %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml files under %s", dir)
	}
	return Parse(files)
}

// Parse parses and validates definitions given as file name -> content.
func Parse(files map[string][]byte) (*Repo, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	p := &parser{}
	repo := &Repo{}
	for _, name := range names {
		p.file(name, files[name], repo)
	}
	if len(p.errs) == 0 {
		validate(repo, p)
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return repo, nil
}

type parser struct {
	name string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, object, format string, args ...any) {
	pos := Pos{File: p.name}
	if n != nil {
		pos.Line = n.Line
	}
	p.errs = append(p.errs, &Error{Pos: pos, Object: object, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) file(name string, content []byte, repo *Repo) {
	p.name = name
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := lineRE.FindStringSubmatch(msg); m != nil {
			fmt.Sscan(m[1], &line)
		}
		p.errs = append(p.errs, &Error{Pos: Pos{File: name, Line: line}, Msg: "invalid YAML: " + msg})
		return
	}
	if len(doc.Content) == 0 {
		return // empty file
	}
	root := doc.Content[0]
	fields := p.mapping(root, "", map[string]bool{"entities": true, "feature_views": true, "feature_services": true})
	for _, e := range p.seq(fields["entities"], "entities") {
		if ent, ok := p.entity(e); ok {
			repo.Entities = append(repo.Entities, ent)
		}
	}
	for _, v := range p.seq(fields["feature_views"], "feature_views") {
		if view, ok := p.view(v); ok {
			repo.FeatureViews = append(repo.FeatureViews, view)
		}
	}
	for _, s := range p.seq(fields["feature_services"], "feature_services") {
		if svc, ok := p.service(s); ok {
			repo.FeatureServices = append(repo.FeatureServices, svc)
		}
	}
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// mapping checks that n is a mapping with only allowed keys and returns its
// values by key. Unknown and repeated keys are errors at their line.
func (p *parser) mapping(n *yaml.Node, object string, allowed map[string]bool) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil {
		return out
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, object, "expected a mapping of keys to values, found %s", kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !allowed[k.Value] {
			keys := make([]string, 0, len(allowed))
			for a := range allowed {
				keys = append(keys, a)
			}
			slices.Sort(keys)
			p.errorf(k, object, "unknown key %q (allowed: %s)", k.Value, strings.Join(keys, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errorf(k, object, "key %q given twice", k.Value)
			continue
		}
		out[k.Value] = v
	}
	return out
}

func (p *parser) seq(n *yaml.Node, what string) []*yaml.Node {
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "", "%s: expected a list, found %s", what, kindName(n))
		return nil
	}
	return n.Content
}

func (p *parser) str(n *yaml.Node, object, key string) (string, bool) {
	if n == nil {
		return "", true
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, object, "%s: expected a single value, found %s", key, kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) strList(n *yaml.Node, object, key string) []string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, object, "%s: expected a list, found %s", key, kindName(n))
		return nil
	}
	var out []string
	for _, c := range n.Content {
		if s, ok := p.str(c, object, key); ok {
			out = append(out, s)
		}
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

// objectName describes a list item for errors, by its name when it has one.
func objectName(kind string, n *yaml.Node) string {
	if n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k, v := n.Content[i], n.Content[i+1]; k.Value == "name" && v.Kind == yaml.ScalarNode {
				return fmt.Sprintf("%s %q", kind, v.Value)
			}
		}
	}
	return kind
}

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.name, Line: n.Line} }

func (p *parser) entity(n *yaml.Node) (Entity, bool) {
	obj := objectName("entity", n)
	f := p.mapping(n, obj, map[string]bool{"name": true, "join_key": true, "type": true, "description": true})
	e := Entity{Pos: p.pos(n)}
	before := len(p.errs)
	e.Name, _ = p.str(f["name"], obj, "name")
	e.JoinKey, _ = p.str(f["join_key"], obj, "join_key")
	t, _ := p.str(f["type"], obj, "type")
	e.Type = ValueType(t)
	e.Description, _ = p.str(f["description"], obj, "description")
	p.ident(n, f["name"], obj, "name", e.Name)
	p.ident(n, f["join_key"], obj, "join_key", e.JoinKey)
	switch {
	case f["type"] == nil:
		p.errorf(n, obj, "type is required (string or int64)")
	case !ValidKeyType(e.Type):
		p.errorf(f["type"], obj, "type %q is not a join key type (want string or int64)", t)
	}
	return e, len(p.errs) == before
}

func (p *parser) view(n *yaml.Node) (FeatureView, bool) {
	obj := objectName("feature_view", n)
	f := p.mapping(n, obj, map[string]bool{"name": true, "entities": true, "ttl": true, "source": true, "features": true, "aggregations": true, "tags": true, "description": true})
	v := FeatureView{Pos: p.pos(n)}
	before := len(p.errs)
	v.Name, _ = p.str(f["name"], obj, "name")
	p.ident(n, f["name"], obj, "name", v.Name)
	v.Description, _ = p.str(f["description"], obj, "description")
	v.Entities = p.strList(f["entities"], obj, "entities")
	if len(v.Entities) == 0 && f["entities"] == nil {
		p.errorf(n, obj, "entities is required: the entities keying the view")
	} else if len(v.Entities) == 0 && f["entities"].Kind == yaml.SequenceNode {
		p.errorf(f["entities"], obj, "entities must name at least one entity")
	}
	if tn := f["ttl"]; tn != nil {
		s, ok := p.str(tn, obj, "ttl")
		if ok {
			d, err := time.ParseDuration(s)
			switch {
			case s == "0":
				d = 0
			case err != nil:
				p.errorf(tn, obj, "ttl %q is not a duration (e.g. 48h, 30m, 0 for no limit)", s)
			case d < 0:
				p.errorf(tn, obj, "ttl %q is negative", s)
			}
			v.TTL = d
		}
	}
	src := p.mapping(f["source"], obj+" source", map[string]bool{"table": true, "timestamp_field": true, "created_timestamp_field": true})
	v.Source.Table, _ = p.str(src["table"], obj, "source.table")
	v.Source.TimestampField, _ = p.str(src["timestamp_field"], obj, "source.timestamp_field")
	v.Source.CreatedTimestampField, _ = p.str(src["created_timestamp_field"], obj, "source.created_timestamp_field")
	if v.Source.Table != "" && !tableRE.MatchString(v.Source.Table) {
		p.errorf(src["table"], obj, "source.table %q is not a table name (table or database.table)", v.Source.Table)
	}
	if v.Source.TimestampField == "" {
		v.Source.TimestampField = "event_ts"
	} else {
		p.ident(n, src["timestamp_field"], obj, "source.timestamp_field", v.Source.TimestampField)
	}
	if v.Source.CreatedTimestampField != "" {
		p.ident(n, src["created_timestamp_field"], obj, "source.created_timestamp_field", v.Source.CreatedTimestampField)
	} else if v.Source.Table == "" {
		v.Source.CreatedTimestampField = "created_ts"
	}
	if an := f["aggregations"]; an != nil {
		// A windowed view: features aggregated from an event table.
		switch {
		case f["features"] != nil:
			p.errorf(f["features"], obj, "a view has features or aggregations, not both")
		case v.Source.Table == "":
			p.errorf(an, obj, "aggregations read an event table: give source.table")
		case f["ttl"] != nil:
			p.errorf(f["ttl"], obj, "ttl does not apply to aggregations (each has its window)")
		case src["created_timestamp_field"] != nil:
			p.errorf(src["created_timestamp_field"], obj, "created_timestamp_field does not apply to aggregations (events are not versions)")
		}
		v.Features = p.aggregations(an, obj)
	}
	var feats []*yaml.Node
	switch {
	case f["aggregations"] != nil: // parsed above
	case f["features"] == nil:
		p.errorf(n, obj, "features (or aggregations of an event table) is required: at least one feature")
	default:
		feats = p.seq(f["features"], "features")
		if len(feats) == 0 && f["features"].Kind == yaml.SequenceNode {
			p.errorf(f["features"], obj, "features must list at least one feature")
		}
	}
	for _, fn := range feats {
		ff := p.mapping(fn, obj+" feature", map[string]bool{"name": true, "type": true, "description": true})
		feat := Feature{Pos: p.pos(fn)}
		feat.Name, _ = p.str(ff["name"], obj, "feature name")
		p.ident(fn, ff["name"], obj, "feature name", feat.Name)
		t, _ := p.str(ff["type"], obj, "feature type")
		feat.Type = ValueType(t)
		feat.Description, _ = p.str(ff["description"], obj, "feature description")
		switch {
		case ff["type"] == nil:
			p.errorf(fn, obj, "feature %q: type is required", feat.Name)
		case !ValidFeatureType(feat.Type):
			names := make([]string, len(FeatureTypes))
			for i, ft := range FeatureTypes {
				names[i] = string(ft)
			}
			p.errorf(ff["type"], obj, "feature %q: unknown type %q (valid: %s)", feat.Name, t, strings.Join(names, ", "))
		}
		v.Features = append(v.Features, feat)
	}
	if tn := f["tags"]; tn != nil {
		if tn.Kind != yaml.MappingNode {
			p.errorf(tn, obj, "tags: expected a mapping of strings, found %s", kindName(tn))
		} else {
			v.Tags = map[string]string{}
			for i := 0; i+1 < len(tn.Content); i += 2 {
				k, val := tn.Content[i], tn.Content[i+1]
				if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode {
					p.errorf(k, obj, "tags: keys and values must be strings")
					continue
				}
				v.Tags[k.Value] = val.Value
			}
		}
	}
	return v, len(p.errs) == before
}

func (p *parser) service(n *yaml.Node) (FeatureService, bool) {
	obj := objectName("feature_service", n)
	f := p.mapping(n, obj, map[string]bool{"name": true, "features": true, "description": true})
	s := FeatureService{Pos: p.pos(n)}
	before := len(p.errs)
	s.Name, _ = p.str(f["name"], obj, "name")
	p.ident(n, f["name"], obj, "name", s.Name)
	s.Description, _ = p.str(f["description"], obj, "description")
	s.Features = p.strList(f["features"], obj, "features")
	if len(s.Features) == 0 {
		at := n
		if f["features"] != nil {
			at = f["features"]
		}
		p.errorf(at, obj, "features must list at least one feature reference (view:feature or view:*)")
	}
	return s, len(p.errs) == before
}

var (
	identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
)

// ident checks a required identifier; item is the node of the whole object
// (for "missing"), at the node of the value itself.
func (p *parser) ident(item, at *yaml.Node, object, key, value string) {
	switch {
	case at == nil:
		p.errorf(item, object, "%s is required", key)
	case !identRE.MatchString(value):
		p.errorf(at, object, "%s %q is not an identifier (letters, digits and _, not starting with a digit)", key, value)
	case len(value) > 64:
		p.errorf(at, object, "%s %q is longer than 64 characters", key, value)
	case strings.HasPrefix(value, "_"):
		p.errorf(at, object, "%s %q starts with _, which tailor reserves for its own columns", key, value)
	}
}

// validate checks what spans objects: duplicates and references.
func validate(r *Repo, p *parser) {
	errorAt := func(pos Pos, object, format string, args ...any) {
		p.errs = append(p.errs, &Error{Pos: pos, Object: object, Msg: fmt.Sprintf(format, args...)})
	}
	// duplicate records name's first definition, and reports a second one.
	duplicate := func(seen map[string]Pos, name string, pos Pos, obj string) bool {
		if first, dup := seen[name]; dup {
			errorAt(pos, obj, "defined twice (first at %s)", first)
			return true
		}
		seen[name] = pos
		return false
	}
	entities := map[string]Pos{}
	for _, e := range r.Entities {
		duplicate(entities, e.Name, e.Pos, fmt.Sprintf("entity %q", e.Name))
	}
	views := map[string]Pos{}
	for i := range r.FeatureViews {
		v := &r.FeatureViews[i]
		obj := fmt.Sprintf("feature_view %q", v.Name)
		if duplicate(views, v.Name, v.Pos, obj) {
			continue
		}
		reserved := map[string]string{v.Source.TimestampField: "the event timestamp column"}
		if v.Source.CreatedTimestampField != "" {
			reserved[v.Source.CreatedTimestampField] = "the created timestamp column"
		}
		seenEntity := map[string]bool{}
		keyOwner := map[string]string{}
		for _, name := range v.Entities {
			e, ok := r.Entity(name)
			switch {
			case !ok:
				errorAt(v.Pos, obj, "unknown entity %q", name)
				continue
			case seenEntity[name]:
				errorAt(v.Pos, obj, "entity %q listed twice", name)
				continue
			}
			seenEntity[name] = true
			if other, ok := keyOwner[e.JoinKey]; ok {
				errorAt(v.Pos, obj, "entities %q and %q share the join key %q", other, name, e.JoinKey)
			}
			keyOwner[e.JoinKey] = name
			reserved[e.JoinKey] = fmt.Sprintf("the join key of entity %q", name)
		}
		features := map[string]Pos{}
		for _, f := range v.Features {
			if first, dup := features[f.Name]; dup {
				errorAt(f.Pos, obj, "feature %q defined twice (first at %s)", f.Name, first)
				continue
			}
			features[f.Name] = f.Pos
			if what, clash := reserved[f.Name]; clash {
				errorAt(f.Pos, obj, "feature %q has the name of %s", f.Name, what)
			}
		}
		if v.Source.CreatedTimestampField != "" && v.Source.CreatedTimestampField == v.Source.TimestampField {
			errorAt(v.Pos, obj, "created_timestamp_field and timestamp_field are both %q", v.Source.TimestampField)
		}
	}
	services := map[string]Pos{}
	for _, s := range r.FeatureServices {
		obj := fmt.Sprintf("feature_service %q", s.Name)
		if duplicate(services, s.Name, s.Pos, obj) {
			continue
		}
		for _, ref := range s.Features {
			if _, err := r.ResolveRefs([]string{ref}); err != nil {
				errorAt(s.Pos, obj, "%v", err)
			}
		}
	}
}
