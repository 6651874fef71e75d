// Package definitions parses and validates tailor's feature repository:
// entities, feature views and feature services declared in YAML files.
// Every problem is reported with the file and line it comes from, and a
// repository is returned only when all of it is valid.
package definitions

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Pos is where a definition was written.
type Pos struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// String renders the position as file:line.
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Entity is a thing features describe, and the key column identifying it.
type Entity struct {
	Name        string    `json:"name"`
	JoinKey     string    `json:"join_key"`
	Type        ValueType `json:"type"`
	Description string    `json:"description,omitempty"`
	Pos         Pos       `json:"pos"`
}

// Feature is one typed value of a feature view.
type Feature struct {
	Name        string    `json:"name"`
	Type        ValueType `json:"type"`
	Description string    `json:"description,omitempty"`
	// Agg, in a windowed view, is how the feature is computed from the
	// view's event table.
	Agg *Aggregation `json:"aggregation,omitempty"`
	Pos Pos          `json:"pos"`
}

// Source says where a view's rows live: an existing ClickHouse table, or
// (Table empty) a table tailor owns.
type Source struct {
	Table                 string `json:"table,omitempty"`
	TimestampField        string `json:"timestamp_field"`
	CreatedTimestampField string `json:"created_timestamp_field,omitempty"`
}

// FeatureView is a set of features keyed by one or more entities, with
// their event timestamps and a time-to-live.
type FeatureView struct {
	Name        string            `json:"name"`
	Entities    []string          `json:"entities"`
	TTL         time.Duration     `json:"ttl"`
	Source      Source            `json:"source"`
	Features    []Feature         `json:"features"`
	Tags        map[string]string `json:"tags,omitempty"`
	Description string            `json:"description,omitempty"`
	Pos         Pos               `json:"pos"`
}

// External reports whether the view reads an existing ClickHouse table.
func (v *FeatureView) External() bool { return v.Source.Table != "" }

// Feature returns the view's feature called name.
func (v *FeatureView) Feature(name string) (*Feature, bool) {
	for i := range v.Features {
		if v.Features[i].Name == name {
			return &v.Features[i], true
		}
	}
	return nil, false
}

// FeatureService is a named list of feature references, the inputs of a
// model.
type FeatureService struct {
	Name        string   `json:"name"`
	Features    []string `json:"features"`
	Description string   `json:"description,omitempty"`
	Pos         Pos      `json:"pos"`
}

// Repo is a complete, valid set of definitions.
type Repo struct {
	Entities        []Entity         `json:"entities"`
	FeatureViews    []FeatureView    `json:"feature_views"`
	FeatureServices []FeatureService `json:"feature_services"`
}

// Entity returns the entity called name.
func (r *Repo) Entity(name string) (*Entity, bool) {
	for i := range r.Entities {
		if r.Entities[i].Name == name {
			return &r.Entities[i], true
		}
	}
	return nil, false
}

// View returns the feature view called name.
func (r *Repo) View(name string) (*FeatureView, bool) {
	for i := range r.FeatureViews {
		if r.FeatureViews[i].Name == name {
			return &r.FeatureViews[i], true
		}
	}
	return nil, false
}

// Service returns the feature service called name.
func (r *Repo) Service(name string) (*FeatureService, bool) {
	for i := range r.FeatureServices {
		if r.FeatureServices[i].Name == name {
			return &r.FeatureServices[i], true
		}
	}
	return nil, false
}

// JoinKeys returns the entities keying v, in declared order.
func (r *Repo) JoinKeys(v *FeatureView) []Entity {
	out := make([]Entity, 0, len(v.Entities))
	for _, name := range v.Entities {
		if e, ok := r.Entity(name); ok {
			out = append(out, *e)
		}
	}
	return out
}

// FeatureRef is a resolved reference to one feature of one view.
type FeatureRef struct {
	View    string
	Feature string
	Type    ValueType
	// Index is the feature's position in its view's Features.
	Index int
}

// String renders the reference as view:feature.
func (f FeatureRef) String() string { return f.View + ":" + f.Feature }

// RefError is a feature reference that does not resolve.
type RefError struct {
	Ref    string
	Reason string
}

func (e *RefError) Error() string { return fmt.Sprintf("feature reference %q: %s", e.Ref, e.Reason) }

// InvalidInput marks a bad reference as the caller's mistake.
func (e *RefError) InvalidInput() bool { return true }

// UnknownServiceError names a feature service that is not defined.
type UnknownServiceError struct{ Name string }

func (e *UnknownServiceError) Error() string {
	return fmt.Sprintf("unknown feature service %q", e.Name)
}

// InvalidInput marks an unknown service as the caller's mistake.
func (e *UnknownServiceError) InvalidInput() bool { return true }

// ResolveRefs expands references ("view:feature", "view:*") into features,
// in the given order, "view:*" in definition order, each feature once.
func (r *Repo) ResolveRefs(refs []string) ([]FeatureRef, error) {
	out := make([]FeatureRef, 0, len(refs))
	// Duplicates are found by a scan while the list is short, by a map
	// once it is long: most requests name a few dozen features.
	var seen map[[2]string]bool
	add := func(v *FeatureView, i int) {
		f := &v.Features[i]
		ref := FeatureRef{View: v.Name, Feature: f.Name, Type: f.Type, Index: i}
		if seen == nil && len(out) >= 64 {
			seen = make(map[[2]string]bool, 2*len(out))
			for _, o := range out {
				seen[[2]string{o.View, o.Feature}] = true
			}
		}
		if seen != nil {
			if seen[[2]string{ref.View, ref.Feature}] {
				return
			}
			seen[[2]string{ref.View, ref.Feature}] = true
		} else if slices.ContainsFunc(out, func(o FeatureRef) bool { return o.View == ref.View && o.Feature == ref.Feature }) {
			return
		}
		out = append(out, ref)
	}
	for _, ref := range refs {
		view, feat, ok := strings.Cut(ref, ":")
		if !ok || view == "" || feat == "" || strings.Contains(feat, ":") {
			return nil, &RefError{Ref: ref, Reason: `want "view:feature" or "view:*"`}
		}
		v, ok := r.View(view)
		if !ok {
			return nil, &RefError{Ref: ref, Reason: fmt.Sprintf("unknown feature view %q", view)}
		}
		if feat == "*" {
			for i := range v.Features {
				add(v, i)
			}
			continue
		}
		i := slices.IndexFunc(v.Features, func(f Feature) bool { return f.Name == feat })
		if i < 0 {
			return nil, &RefError{Ref: ref, Reason: fmt.Sprintf("feature view %q has no feature %q", view, feat)}
		}
		add(v, i)
	}
	return out, nil
}

// ResolveService expands the features of the service called name.
func (r *Repo) ResolveService(name string) ([]FeatureRef, error) {
	s, ok := r.Service(name)
	if !ok {
		return nil, &UnknownServiceError{Name: name}
	}
	return r.ResolveRefs(s.Features)
}

// Digest identifies the definitions' content: a sha256 of their canonical
// JSON without positions, so moving a definition between files or lines
// does not change it.
func (r *Repo) Digest() string {
	c := *r
	c.Entities = append([]Entity(nil), r.Entities...)
	for i := range c.Entities {
		c.Entities[i].Pos = Pos{}
	}
	c.FeatureViews = make([]FeatureView, len(r.FeatureViews))
	for i, v := range r.FeatureViews {
		v.Pos = Pos{}
		v.Features = append([]Feature(nil), v.Features...)
		for j := range v.Features {
			v.Features[j].Pos = Pos{}
		}
		c.FeatureViews[i] = v
	}
	c.FeatureServices = append([]FeatureService(nil), r.FeatureServices...)
	for i := range c.FeatureServices {
		c.FeatureServices[i].Pos = Pos{}
	}
	b, _ := json.Marshal(&c) // maps marshal with sorted keys: canonical
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
