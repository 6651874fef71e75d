package nba

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/onnxrt"
	"github.com/tailorhq/tailor/serving/predlog"
)

// Features is what the service needs of the online store.
type Features interface {
	Get(ctx context.Context, repo *definitions.Repo, refs []definitions.FeatureRef, rows onlinestore.EntityRows) ([][]onlinestore.Result, error)
}

// Models is what the service needs of the model manager.
type Models interface {
	Get(ctx context.Context, ref string) (*models.Model, func(), error)
}

// Request is one customer's question.
type Request struct {
	// Entity is the customer's entity row (its join keys).
	Entity onlinestore.EntityRows
	// Context holds the fields the caller gave (device, timezone, ...).
	Context map[string]any
	// Values are request values the models read.
	Values map[string]float64
	// K is how many products to return (default 5).
	K int
	// Exclude are products never to return.
	Exclude []string
	// Allowed are the channels the caller can use; empty means all.
	Allowed []string
	// At is the request time (default now).
	At time.Time
}

// Scored is a label with its score.
type Scored struct {
	Label string
	Score float64
}

// Bucket is one bucket of the timing distribution.
type Bucket struct {
	Label       string
	After       time.Duration
	Probability float64
}

// ModelRef names a version that took part in an answer.
type ModelRef struct {
	Name    string
	Version int64
	// Ref is the reference configured (e.g. next_product@champion).
	Ref string
}

// Answer is the next best action.
type Answer struct {
	Products []Scored
	Timing   []Bucket
	SendAt   time.Time
	Channels []Scored
	Channel  string
	Models   []ModelRef
	// Fallback is set when any part came from a fallback; Reasons say
	// which and why.
	Fallback bool
	Reasons  []string
	// InputsDigest identifies every input tensor the models were given
	// (see predlog.Digest), for the prediction log.
	InputsDigest string
}

// RequestError is a request the service cannot answer (a malformed key,
// an unknown time zone), as opposed to a model it falls back from.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// InvalidInput marks a request the service cannot answer as the caller's
// mistake.
func (e *RequestError) InvalidInput() bool { return true }

// MaxK bounds the products one answer may hold.
const MaxK = 1000

// Service answers next-best-action requests.
type Service struct {
	cfg      *Config
	models   Models
	features Features
	defs     func() *definitions.Repo
	now      func() time.Time
}

// New returns the service.
func New(cfg *Config, m Models, features Features, defs func() *definitions.Repo) *Service {
	return &Service{cfg: cfg, models: m, features: features, defs: defs, now: time.Now}
}

// task is one of the three models while an answer is built.
type task struct {
	name    string
	ref     string
	model   *models.Model
	release func()
	// feats are the positions of the model's features in the shared fetch.
	feats  []int
	failed string // why it falls back
}

// Answer builds the next best action for one customer.
func (s *Service) Answer(ctx context.Context, req Request) (*Answer, error) {
	at := req.At
	if at.IsZero() {
		at = s.now()
	}
	k := req.K
	switch {
	case k < 0 || k > MaxK:
		return nil, &RequestError{fmt.Errorf("k = %d: ask for 1 to %d products (0: the default, 5)", k, MaxK)}
	case k == 0:
		k = 5
	}
	derived, err := assemble.DeriveContext(req.Context, at)
	if err != nil {
		return nil, &RequestError{err}
	}
	repo := s.defs()
	tasks := []*task{
		{name: "products", ref: s.cfg.Models.NextProduct},
		{name: "timing", ref: s.cfg.Models.Timing},
		{name: "channel", ref: s.cfg.Models.Channel},
	}
	for _, t := range tasks {
		m, release, err := s.models.Get(ctx, t.ref)
		if err != nil {
			t.failed = fmt.Sprintf("model %s: %v", t.ref, err)
			continue
		}
		t.model, t.release = m, release
	}
	defer func() {
		for _, t := range tasks {
			if t.release != nil {
				t.release()
			}
		}
	}()
	// Request values no model reads are refused (a misspelt name would
	// otherwise be defaulted silently), and so are the context fields the
	// server derives. Other context fields are not: a decision service
	// sends one context (device, page, ...) to all three models. When a
	// model could not be loaded, what it reads is unknown, and its part of
	// the answer is a fallback anyway.
	var plans []*assemble.Plan
	for _, t := range tasks {
		if t.model != nil {
			plans = append(plans, t.model.Plan)
		}
	}
	var derivedGiven []string
	for _, name := range []string{registry.ContextHourOfDay, registry.ContextDayOfWeek} {
		if _, ok := req.Context[name]; ok {
			derivedGiven = append(derivedGiven, name)
		}
	}
	valueNames := slices.Collect(maps.Keys(req.Values))
	if len(plans) < len(tasks) {
		valueNames = nil
	}
	if err := assemble.CheckNames(derivedGiven, valueNames, plans...); err != nil {
		return nil, &RequestError{err}
	}

	// One fetch for every feature any part reads.
	var refs []definitions.FeatureRef
	index := map[string]int{}
	add := func(r definitions.FeatureRef) int {
		key := r.String()
		if i, ok := index[key]; ok {
			return i
		}
		index[key] = len(refs)
		refs = append(refs, r)
		return len(refs) - 1
	}
	for _, t := range tasks {
		if t.model != nil {
			for _, r := range t.model.Plan.Refs {
				t.feats = append(t.feats, add(r))
			}
		}
	}
	owned := -1
	if s.cfg.Owned != "" {
		if rs, err := repo.ResolveRefs([]string{s.cfg.Owned}); err == nil {
			owned = add(rs[0])
		}
	}
	consent := map[string]int{}
	for ch, f := range s.cfg.Consent {
		if rs, err := repo.ResolveRefs([]string{f}); err == nil {
			consent[ch] = add(rs[0])
		}
	}
	sendHour := -1
	if s.cfg.SendHour != "" {
		if rs, err := repo.ResolveRefs([]string{s.cfg.SendHour}); err == nil {
			sendHour = add(rs[0])
		}
	}
	values := make([]any, len(refs))
	known := len(refs) == 0
	fetchFailed := ""
	if len(refs) > 0 {
		results, err := s.features.Get(ctx, repo, refs, req.Entity)
		var ke *onlinestore.KeyError
		switch {
		case errors.As(err, &ke):
			return nil, &RequestError{fmt.Errorf("customer: %s", ke.Msg)}
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fetchFailed = fmt.Sprintf("features unavailable: %v", err)
		default:
			for i := range refs {
				res := &results[0][i]
				if res.Status == onlinestore.Present {
					known = true
					values[i] = res.Value()
				}
			}
		}
	}
	ans := &Answer{}
	for _, t := range tasks {
		switch {
		case t.failed != "":
		case fetchFailed != "":
			t.failed = fetchFailed
		case !known:
			t.failed = "customer unknown: no feature has a current row for it (none, or all older than their views' ttl)"
		}
	}
	// Run the models that can answer.
	outputs := map[string][]float64{}
	labels := map[string][]string{}
	var fed []assemble.Tensor
	for _, t := range tasks {
		if t.failed != "" {
			continue
		}
		row := assemble.Row{Features: make([]any, len(t.feats)), Context: derived, Request: req.Values}
		for j, f := range t.feats {
			row.Features[j] = values[f]
		}
		inputs := t.model.Plan.Fill([]assemble.Row{row})
		fed = append(fed, inputs...)
		outs, err := t.model.Run(ctx, models.ToRuntime(inputs))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			t.failed = fmt.Sprintf("model %s:%d failed: %v", t.model.Version.Name, t.model.Version.Version, err)
			continue
		}
		ls, ps, err := probabilities(t.model.Version.Spec, outs)
		if err != nil {
			t.failed = fmt.Sprintf("model %s:%d: %v", t.model.Version.Name, t.model.Version.Version, err)
			continue
		}
		outputs[t.name], labels[t.name] = ps, ls
		ans.Models = append(ans.Models, ModelRef{Name: t.model.Version.Name, Version: t.model.Version.Version, Ref: t.ref})
	}
	ans.InputsDigest = predlog.Digest(fed)
	for _, t := range tasks {
		if t.failed != "" {
			ans.Fallback = true
			ans.Reasons = append(ans.Reasons, t.name+": "+t.failed)
		}
	}

	// Products: best first, owned and excluded left out.
	skip := map[string]bool{}
	for _, p := range req.Exclude {
		skip[p] = true
	}
	if owned >= 0 {
		for _, p := range asLabels(values[owned]) {
			skip[p] = true
		}
	}
	if ps, ok := outputs["products"]; ok {
		ranked := rank(labels["products"], ps)
		for _, sc := range ranked {
			if !skip[sc.Label] && len(ans.Products) < k {
				ans.Products = append(ans.Products, sc)
			}
		}
	} else {
		n := len(s.cfg.Fallback.Products)
		for i, p := range s.cfg.Fallback.Products {
			if !skip[p] && len(ans.Products) < k {
				// Popularity rank as a score in (0, 1], best first.
				ans.Products = append(ans.Products, Scored{Label: p, Score: float64(n-i) / float64(n)})
			}
		}
	}

	// Timing: the distribution and the send time of its likeliest bucket.
	ans.SendAt = at.Add(s.cfg.sendAfter)
	if ps, ok := outputs["timing"]; ok {
		buckets := timingBuckets(tasks[1].model.Version.Spec, labels["timing"])
		best := -1
		for i, p := range ps {
			ans.Timing = append(ans.Timing, Bucket{Label: labels["timing"][i], After: buckets[i], Probability: p})
			if best < 0 || p > ps[best] {
				best = i
			}
		}
		if best >= 0 {
			ans.SendAt = at.Add(buckets[best])
		}
	}
	if sendHour >= 0 {
		if h, ok := hourOf(values[sendHour]); ok {
			ans.SendAt = atHour(ans.SendAt, h)
		}
	}

	// Channels: allowed by the caller and consented to by the customer.
	usable := func(ch string) bool {
		if len(req.Allowed) > 0 && !slices.Contains(req.Allowed, ch) {
			return false
		}
		if i, ok := consent[ch]; ok {
			b, _ := values[i].(bool)
			return b
		}
		_, needs := s.cfg.Consent[ch]
		return !needs // a consent feature that does not resolve: no consent
	}
	if ps, ok := outputs["channel"]; ok {
		var total float64
		for i, ch := range labels["channel"] {
			if usable(ch) {
				ans.Channels = append(ans.Channels, Scored{Label: ch, Score: ps[i]})
				total += ps[i]
			}
		}
		for i := range ans.Channels {
			if total > 0 {
				ans.Channels[i].Score /= total
			}
		}
		sort.SliceStable(ans.Channels, func(a, b int) bool { return ans.Channels[a].Score > ans.Channels[b].Score })
	} else if ch := s.cfg.Fallback.Channel; usable(ch) {
		ans.Channels = []Scored{{Label: ch, Score: 1}}
	}
	if len(ans.Channels) > 0 {
		ans.Channel = ans.Channels[0].Label
		return ans, nil
	}
	// Nothing else can answer: the fallback channel, flagged, with why (one
	// reason per part: added to the channel model's own, if it failed).
	ans.Channel = s.cfg.Fallback.Channel
	ans.Fallback = true
	why := noChannel(req.Allowed, labels["channel"], s.cfg.Fallback.Channel, !known)
	if i := slices.IndexFunc(ans.Reasons, func(r string) bool { return strings.HasPrefix(r, "channel: ") }); i >= 0 {
		ans.Reasons[i] += "; " + why
	} else {
		ans.Reasons = append(ans.Reasons, "channel: "+why)
	}
	return ans, nil
}

// noChannel says why no channel could be chosen, so the fallback channel
// is answered.
func noChannel(allowed, ranked []string, fallback string, unknown bool) string {
	var why string
	switch {
	case unknown:
		why = "the customer is unknown, so no consent is known"
	case len(allowed) > 0 && len(ranked) > 0 && !slices.ContainsFunc(ranked, func(ch string) bool { return slices.Contains(allowed, ch) }):
		why = fmt.Sprintf("none of the allowed channels (%s) is one the channel model ranks (%s)", strings.Join(allowed, ", "), strings.Join(ranked, ", "))
	case len(ranked) > 0:
		why = fmt.Sprintf("none of the channels the model ranks (%s) is both allowed and consented to", strings.Join(ranked, ", "))
	default:
		why = "the fallback channel is not allowed or not consented to"
	}
	return why + "; answering the fallback channel " + fallback + " (check consent before using it)"
}

// probabilities reads the first declared output's values and labels for
// the single row run.
func probabilities(spec *registry.Spec, outs []onnxrt.Tensor) ([]string, []float64, error) {
	if len(spec.Outputs) == 0 {
		return nil, nil, errors.New("no output declared")
	}
	want := spec.Outputs[0]
	for _, t := range outs {
		if t.Name != want.Name {
			continue
		}
		switch {
		case t.Maps != nil:
			var ps []float64
			for _, l := range want.Labels {
				ps = append(ps, float64(t.Maps[0][l]))
			}
			return want.Labels, ps, nil
		case t.Float32 != nil:
			ps := make([]float64, len(want.Labels))
			for i := range ps {
				ps[i] = float64(t.Float32[i])
			}
			return want.Labels, ps, nil
		case t.Float64 != nil:
			return want.Labels, slices.Clone(t.Float64[:len(want.Labels)]), nil
		}
		return nil, nil, fmt.Errorf("output %q is not a probability tensor", t.Name)
	}
	return nil, nil, fmt.Errorf("the model gave no output %q", want.Name)
}

func timingBuckets(spec *registry.Spec, labels []string) []time.Duration {
	if len(spec.Outputs) > 0 && len(spec.Outputs[0].Buckets) == len(labels) {
		return spec.Outputs[0].Buckets
	}
	out := make([]time.Duration, len(labels))
	for i, l := range labels {
		out[i], _ = registry.ParseDuration(l)
	}
	return out
}

func rank(labels []string, scores []float64) []Scored {
	out := make([]Scored, len(labels))
	for i := range labels {
		out[i] = Scored{Label: labels[i], Score: scores[i]}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Score > out[b].Score })
	return out
}

// asLabels reads an owned-products array value as labels.
func asLabels(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []int64:
		out := make([]string, len(x))
		for i, n := range x {
			out[i] = strconv.FormatInt(n, 10)
		}
		return out
	case []float32:
		out := make([]string, len(x))
		for i, f := range x {
			out[i] = strconv.FormatFloat(float64(f), 'g', -1, 32)
		}
		return out
	}
	return nil
}

// hourOf reads an hour-of-day feature value.
func hourOf(v any) (float64, bool) {
	var h float64
	switch x := v.(type) {
	case float64:
		h = x
	case float32:
		h = float64(x)
	case int64:
		h = float64(x)
	case int32:
		h = float64(x)
	default:
		return 0, false
	}
	if math.IsNaN(h) || h < 0 || h >= 24 {
		return 0, false
	}
	return h, true
}

// atHour is the first instant at or after t whose UTC time of day is hour
// h (to the minute).
func atHour(t time.Time, h float64) time.Time {
	t = t.UTC()
	day := t.Truncate(24 * time.Hour)
	at := day.Add(time.Duration(h*60) * time.Minute)
	if at.Before(t) {
		at = at.Add(24 * time.Hour)
	}
	return at
}
