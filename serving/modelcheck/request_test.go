package modelcheck

import (
	"errors"
	"strings"
	"testing"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
)

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: cust
    entities: [customer]
    features: [{name: orders, type: int64}]
  - name: cp
    entities: [customer, product]
    features: [{name: bought, type: int64}]
`

const spec = `name: m
inputs:
  - name: x
    elements:
      - {feature: "cust:orders"}
      - {feature: "cp:bought"}
      - {context: hour_of_day}
      - {context: device, encoding: index, vocabulary: [web]}
      - {request: basket}
outputs: [{name: y}]
`

func plan(t *testing.T) (*registry.Spec, *definitions.Repo, *assemble.Plan) {
	t.Helper()
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := registry.ParseSpec("m.yaml", []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	p, err := assemble.Compile(s, repo)
	if err != nil {
		t.Fatal(err)
	}
	return s, repo, p
}

// TestRequestErrors checks each bad instance is a *RequestError naming
// the field and the name at fault.
func TestRequestErrors(t *testing.T) {
	_, repo, p := plan(t)
	for _, tc := range []struct {
		name     string
		ctx      map[string]string
		values   map[string]float64
		entities []map[string]string
		field    string
		want     string
	}{
		{"unknown context", map[string]string{"devise": "ios"}, nil, nil, FieldContext, `"devise"`},
		{"derived context", map[string]string{"day_of_week": "1"}, nil, nil, FieldContext, "derived"},
		{"unknown value", nil, map[string]float64{"bsket": 1}, nil, FieldValue, `"bsket"`},
		{"no entity", nil, nil, []map[string]string{{}}, FieldEntity, "customer_id, product_id"},
		{"missing key", nil, nil, []map[string]string{{"customer_id": "c1"}}, FieldEntity, "no join key product_id (feature view cp"},
		{"not an integer", nil, nil, []map[string]string{{"customer_id": "c1", "product_id": "x1"}}, FieldEntity, `"x1" is not an integer`},
		{"unknown key", nil, nil, []map[string]string{{"customer_id": "c1", "product_id": "1", "store_id": "s"}}, FieldEntity, "store_id is not a join key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkNames("m", p, tc.ctx, tc.values)
			if err == nil {
				_, err = entityRows(repo, p, tc.entities)
				if err != nil {
					err = &RequestError{FieldEntity, err}
				}
			}
			var re *RequestError
			if !errors.As(err, &re) || re.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want a %s error naming %s", err, tc.field, tc.want)
			}
		})
	}
	// Good names and keys pass; keys are typed as declared.
	if err := checkNames("m", p, map[string]string{"device": "ios", "timezone": "Asia/Tokyo"}, map[string]float64{"basket": 1}); err != nil {
		t.Fatal(err)
	}
	rows, err := entityRows(repo, p, []map[string]string{{"customer_id": "c1", "product_id": "9007199254740993"}})
	if err != nil {
		t.Fatal(err)
	}
	if k := rows[0].GetKeys(); k["customer_id"].GetStringValue() != "c1" || k["product_id"].GetInt64Value() != 9007199254740993 {
		t.Fatalf("keys %v", k)
	}
}
