package nba_test

import (
	"strings"
	"testing"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/serving/nba"
)

const good = `models: {next_product: np@champion, timing: t@champion, channel: c@champion}
owned: "cust:owned"
consent: {email: "cust:email_ok"}
fallback: {products: [p1, p2], channel: email, send_after: 1d}
`

func TestConfig(t *testing.T) {
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(`entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: owned, type: array<string>}
      - {name: email_ok, type: bool}
      - {name: orders, type: int64}
`)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nba.ParseConfig("nba.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(repo); err != nil {
		t.Fatalf("a good configuration was refused: %v", err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", good + "flavour: x\n", []string{"nba.yaml", "flavour"}},
		{"no models", "fallback: {products: [p1], channel: email}\n", []string{"models: name next_product, timing and channel"}},
		{"no fallback", "models: {next_product: a, timing: b, channel: c}\n", []string{"fallback.products", "fallback.channel"}},
		{"bad delay", strings.Replace(good, "send_after: 1d", "send_after: soon", 1), []string{`send_after "soon"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := nba.ParseConfig("nba.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"owned not an array", `owned: "cust:orders"`, "cust:orders is int64; it must be an array"},
		{"owned unknown", `owned: "cust:nope"`, `"cust:nope"`},
		{"consent not bool", `consent: {email: "cust:orders"}`, "consent email: cust:orders is int64; it must be bool"},
		{"send hour not a number", `send_hour: "cust:email_ok"`, "send_hour: cust:email_ok is bool; it must be a number"},
		{"send hour unknown", `send_hour: "cust:nope"`, `"cust:nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := good
			switch {
			case strings.HasPrefix(tc.edit, "owned"):
				y = strings.Replace(y, `owned: "cust:owned"`, tc.edit, 1)
			case strings.HasPrefix(tc.edit, "send_hour"):
				y += tc.edit + "\n"
			default:
				y = strings.Replace(y, `consent: {email: "cust:email_ok"}`, tc.edit, 1)
			}
			c, err := nba.ParseConfig("nba.yaml", []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Check(repo); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
