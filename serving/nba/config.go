// Package nba answers the next best action for a customer: which
// products, when and through which channel. The three task models behind
// their aliases share one feature fetch; owned products and excluded ones
// are left out of the ranking; channels are restricted to those the caller
// allows and the customer consented to; and a model that is missing or
// failing, or a customer nobody knows, is answered by the declared
// fallback and flagged.
package nba

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
)

// Config says which models answer and how to fall back.
type Config struct {
	// Models are the references of the three task models, e.g.
	// next_product@champion.
	Models struct {
		NextProduct string `yaml:"next_product"`
		Timing      string `yaml:"timing"`
		Channel     string `yaml:"channel"`
	} `yaml:"models"`
	// Owned, optional, is an array feature of the products a customer
	// owns; they are never recommended.
	Owned string `yaml:"owned"`
	// Consent maps a channel to a bool feature saying the customer
	// consented to it; a channel without an entry needs no consent.
	Consent map[string]string `yaml:"consent"`
	// SendHour, optional, is a numeric feature holding the hour of day
	// (UTC, 0-23, fractions allowed) the customer is best reached at: the
	// send time moves to the first such hour at or after the timing's.
	SendHour string `yaml:"send_hour"`
	// Fallback answers when a model cannot.
	Fallback struct {
		// Products is the popularity ranking, most popular first.
		Products []string `yaml:"products"`
		// Channel is the default channel.
		Channel string `yaml:"channel"`
		// SendAfter is the default delay before reaching the customer.
		SendAfter string `yaml:"send_after"`
	} `yaml:"fallback"`

	sendAfter time.Duration
}

// LoadConfig reads and checks a next-best-action configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("next best action config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig parses a configuration; name is used in errors.
func ParseConfig(name string, b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var errs []error
	if c.Models.NextProduct == "" || c.Models.Timing == "" || c.Models.Channel == "" {
		errs = append(errs, fmt.Errorf("%s: models: name next_product, timing and channel (e.g. next_product@champion)", name))
	}
	if len(c.Fallback.Products) == 0 {
		errs = append(errs, fmt.Errorf("%s: fallback.products: give the popularity ranking that answers when the next-product model cannot", name))
	}
	if c.Fallback.Channel == "" {
		errs = append(errs, fmt.Errorf("%s: fallback.channel: give the default channel", name))
	}
	c.sendAfter = 24 * time.Hour
	if c.Fallback.SendAfter != "" {
		d, err := registry.ParseDuration(c.Fallback.SendAfter)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s: fallback.send_after %q is not a duration like 6h or 1d", name, c.Fallback.SendAfter))
		}
		c.sendAfter = d
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

// Check resolves the configuration's features against the definitions.
func (c *Config) Check(repo *definitions.Repo) error {
	var errs []error
	if c.Owned != "" {
		refs, err := repo.ResolveRefs([]string{c.Owned})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("owned: %w", err))
		case !refs[0].Type.IsArray():
			errs = append(errs, fmt.Errorf("owned: %s is %s; it must be an array of product ids", c.Owned, refs[0].Type))
		}
	}
	if c.SendHour != "" {
		refs, err := repo.ResolveRefs([]string{c.SendHour})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("send_hour: %w", err))
		case !numeric(refs[0].Type):
			errs = append(errs, fmt.Errorf("send_hour: %s is %s; it must be a number (an hour of day)", c.SendHour, refs[0].Type))
		}
	}
	for ch, f := range c.Consent {
		refs, err := repo.ResolveRefs([]string{f})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("consent %s: %w", ch, err))
		case refs[0].Type != definitions.Bool:
			errs = append(errs, fmt.Errorf("consent %s: %s is %s; it must be bool", ch, f, refs[0].Type))
		}
	}
	return errors.Join(errs...)
}

func numeric(t definitions.ValueType) bool {
	switch t {
	case definitions.Int32, definitions.Int64, definitions.Float32, definitions.Float64:
		return true
	}
	return false
}
