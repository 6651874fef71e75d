package modelcheck

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tailorhq/tailor/featurestore/definitions"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/serving/assemble"
)

// checkNames refuses context fields and request values the model does
// not read, by the rule Predict applies (assemble.CheckNames): a misspelt
// name would otherwise silently feed a default.
func checkNames(model string, plan *assemble.Plan, ctx map[string]string, values map[string]float64) error {
	err := assemble.CheckNames(sortedKeys(ctx), sortedKeys(values), plan)
	var ne *assemble.NameError
	if errors.As(err, &ne) {
		field := FieldContext
		if ne.Kind == "request value" {
			field = FieldValue
		}
		return &RequestError{field, fmt.Errorf("model %s: %w", model, err)}
	}
	return err
}

// joinKey is an entity the model's features are keyed by.
type joinKey struct {
	definitions.Entity
	view string // the first view of the plan keyed by it
}

// entityRows types each instance's join keys as the definitions declare
// them, and refuses a missing key, a value of the wrong type and a key
// the model's features are not keyed by.
func entityRows(repo *definitions.Repo, plan *assemble.Plan, entities []map[string]string) ([]*featurestorev1.EntityRow, error) {
	var keys []joinKey
	for _, ref := range plan.Refs {
		v, ok := repo.View(ref.View)
		if !ok {
			return nil, fmt.Errorf("unknown feature view %q", ref.View)
		}
		for _, e := range repo.JoinKeys(v) {
			if !slices.ContainsFunc(keys, func(k joinKey) bool { return k.JoinKey == e.JoinKey }) {
				keys = append(keys, joinKey{Entity: e, view: v.Name})
			}
		}
	}
	if len(keys) > 0 && len(entities) == 1 && len(entities[0]) == 0 {
		return nil, fmt.Errorf("the model reads features keyed by %s: name an entity", keyNames(keys))
	}
	rows := make([]*featurestorev1.EntityRow, len(entities))
	for i, ent := range entities {
		row := &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{}}
		for _, k := range keys {
			text, ok := ent[k.JoinKey]
			if !ok {
				return nil, fmt.Errorf("entity %s: no join key %s (feature view %s is keyed by entity %s)", EntityText(ent), k.JoinKey, k.view, k.Name)
			}
			v, err := keyValue(k.Entity, text)
			if err != nil {
				return nil, fmt.Errorf("entity %s: %w", EntityText(ent), err)
			}
			row.Keys[k.JoinKey] = v
		}
		for _, name := range sortedKeys(ent) {
			if !slices.ContainsFunc(keys, func(k joinKey) bool { return k.JoinKey == name }) {
				if len(keys) == 0 {
					return nil, fmt.Errorf("entity %s: the model reads no features, so no join keys", EntityText(ent))
				}
				return nil, fmt.Errorf("entity %s: %s is not a join key of the features the model reads (they are keyed by %s)", EntityText(ent), name, keyNames(keys))
			}
		}
		rows[i] = row
	}
	return rows, nil
}

// keyValue types a join key given as text.
func keyValue(e definitions.Entity, text string) (*featurestorev1.Value, error) {
	if e.Type == definitions.Int64 {
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("join key %s of entity %s is int64; %q is not an integer", e.JoinKey, e.Name, text)
		}
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}, nil
	}
	return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: text}}, nil
}

func keyNames(keys []joinKey) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.JoinKey
	}
	return strings.Join(names, ", ")
}

// EntityText renders join keys as key=value,... in key order.
func EntityText(ent map[string]string) string {
	parts := make([]string, 0, len(ent))
	for _, k := range sortedKeys(ent) {
		parts = append(parts, k+"="+ent[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
