// Package onlinestore answers online feature lookups: from the online tier
// when it holds the key, else read through from the offline store (the
// latest row by the point-in-time rule at now), with concurrent misses of
// the same key collapsed into one query and absent keys remembered
// briefly. A bounded tier therefore never answers a wrong NOT_FOUND.
package onlinestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
)

// Status says why a value is what it is.
type Status int

// The statuses of a looked-up value.
const (
	// Present: the key's latest row holds the value (possibly null).
	Present Status = iota + 1
	// NotFound: the view has no row for the key.
	NotFound
	// OutsideMaxAge: the latest row is older than the view's ttl.
	OutsideMaxAge
)

// Result is one feature of one entity row.
type Result struct {
	Status  Status
	EventTS time.Time
	// Row is the cached row the value comes from and Index its position
	// there; Row is nil unless Present. Rows are shared and immutable.
	Row   *onlinetier.Row
	Index int
	// Type is the feature's declared type.
	Type definitions.ValueType
}

// Value returns the value in its Go form: nil for null or when not
// Present, else int32, int64, float32, float64, string, bool, time.Time,
// []float32, []int64 or []string. Callers on a hot path read Row directly
// and avoid boxing it.
func (r *Result) Value() any {
	if r.Row == nil || r.Index >= r.Row.Len() {
		return nil
	}
	return fromTier(r.Type, r.Row, r.Index)
}

// KeyError is an entity row whose join keys do not fit a requested view.
type KeyError struct {
	Row int
	Msg string
}

func (e *KeyError) Error() string { return fmt.Sprintf("entity row %d: %s", e.Row, e.Msg) }

// InvalidInput marks a bad entity row as the caller's mistake.
func (e *KeyError) InvalidInput() bool { return true }

// Options tunes a Store.
type Options struct {
	// MissTTL is how long a key known to have no row is remembered
	// (default 1s).
	MissTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store looks up online features.
type Store struct {
	off  *offline.Store
	tier *onlinetier.Tier
	opt  Options

	mu       sync.Mutex
	inflight map[string]*load

	readThroughs atomic.Uint64
	latency      prometheus.Histogram
}

// ReadThroughs counts the queries sent to the offline store for keys the
// tier did not hold.
func (s *Store) ReadThroughs() uint64 { return s.readThroughs.Load() }

// Register exports the read-through metrics to reg: queries sent and their
// latency.
func (s *Store) Register(reg prometheus.Registerer) error {
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tailor_online_read_through_queries_total", Help: "ClickHouse queries for keys the online tier did not hold.",
	}, func() float64 { return float64(s.readThroughs.Load()) })); err != nil {
		return err
	}
	return reg.Register(s.latency)
}

// load is one key's read-through in flight; waiters take its row from
// here, not from the tier, which may already have evicted it.
type load struct {
	done chan struct{}
	row  *onlinetier.Row // nil: the view has no row for the key
	err  error
}

// New returns a store reading through tier to off.
func New(off *offline.Store, tier *onlinetier.Tier, opt Options) *Store {
	if opt.MissTTL <= 0 {
		opt.MissTTL = time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Store{off: off, tier: tier, opt: opt, inflight: map[string]*load{},
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tailor_online_read_through_seconds", Help: "Latency of ClickHouse read-through queries.",
			Buckets: prometheus.ExponentialBuckets(250e-6, 2, 14), // 250µs .. 2s
		})}
}

// readThroughTimeout bounds a read-through query, which runs apart from
// the requests waiting for it.
const readThroughTimeout = 30 * time.Second

// absentEvent marks a cached "no row" entry; its CreatedTS holds when the
// absence was observed (Unix nanoseconds).
const absentEvent = math.MinInt64

// EntityRows are the entity rows of a lookup.
type EntityRows interface {
	Len() int
	// JoinKey returns row i's value of a join key; ok is false when the
	// row has none.
	JoinKey(i int, key string) (v KeyValue, ok bool)
}

// KeyValue is a join key value: an integer, or text (which an int64 key
// accepts when it is a decimal integer, as text clients send it).
type KeyValue struct {
	Str   string
	Int   int64
	IsInt bool
}

// MapRows adapts entity rows given as join key -> string or int64.
type MapRows []map[string]any

// Len is the number of rows.
func (m MapRows) Len() int { return len(m) }

// JoinKey reads a key of row i; a value of another type reads as absent.
func (m MapRows) JoinKey(i int, key string) (KeyValue, bool) {
	switch x := m[i][key].(type) {
	case string:
		return KeyValue{Str: x}, true
	case int64:
		return KeyValue{Int: x, IsInt: true}, true
	}
	return KeyValue{}, false
}

// Get answers refs for each entity row. The answer has one slice per row,
// in refs order.
func (s *Store) Get(ctx context.Context, repo *definitions.Repo, refs []definitions.FeatureRef, rows EntityRows) ([][]Result, error) {
	now := s.opt.Now()
	n := rows.Len()
	out := make([][]Result, n)
	cells := make([]Result, n*len(refs))
	for i := range out {
		out[i] = cells[i*len(refs) : (i+1)*len(refs) : (i+1)*len(refs)]
	}
	// One pass per view, in order of first mention: its keys, one
	// read-through query for its misses.
	var done []string
	for first, ref := range refs {
		if slices.Contains(done, ref.View) {
			continue
		}
		done = append(done, ref.View)
		name := ref.View
		// positions in refs of this view's features, and their indexes in
		// the view
		var pos, idx []int
		v, ok := repo.View(name)
		if !ok {
			return nil, fmt.Errorf("unknown feature view %q", name)
		}
		for p := first; p < len(refs); p++ {
			if refs[p].View != name {
				continue
			}
			j := refs[p].Index
			if j < 0 || j >= len(v.Features) || v.Features[j].Name != refs[p].Feature {
				// A reference resolved against other definitions.
				if j = slices.IndexFunc(v.Features, func(f definitions.Feature) bool { return f.Name == refs[p].Feature }); j < 0 {
					return nil, fmt.Errorf("feature view %q has no feature %q", name, refs[p].Feature)
				}
			}
			pos, idx = append(pos, p), append(idx, j)
		}
		ents := repo.JoinKeys(v)
		keys := make([][]byte, n)
		var buf []byte
		for i := range n {
			start := len(buf)
			var err error
			if buf, err = appendKey(buf, ents, rows, i); err != nil {
				return nil, &KeyError{Row: i, Msg: fmt.Sprintf("feature view %q: %v", v.Name, err)}
			}
			keys[i] = buf[start:len(buf):len(buf)]
		}
		found, err := s.rows(ctx, repo, v, keys, now)
		if err != nil {
			return nil, err
		}
		for i := range n {
			r := found[i]
			for n, p := range pos {
				res := &out[i][p]
				switch {
				case r == nil:
					res.Status = NotFound
				case v.TTL > 0 && now.Sub(time.Unix(r.EventTS, 0)) > v.TTL:
					res.Status, res.EventTS = OutsideMaxAge, time.Unix(r.EventTS, 0).UTC()
				default:
					res.Status, res.EventTS = Present, time.Unix(r.EventTS, 0).UTC()
					res.Row, res.Index, res.Type = r, idx[n], v.Features[idx[n]].Type
				}
			}
		}
	}
	return out, nil
}

// rows returns the latest row of each key (nil when the view has none),
// reading through for keys the tier does not hold.
func (s *Store) rows(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, keys [][]byte, now time.Time) ([]*onlinetier.Row, error) {
	found := make([]*onlinetier.Row, len(keys))
	var missing []int
	for i, k := range keys {
		if r, ok := s.cached(v.Name, k, now); ok {
			found[i] = r
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return found, nil
	}
	// Claim the keys nobody is loading; wait for the others.
	loads := make(map[int]*load, len(missing))
	var mine []int
	claimed := map[string]*load{}
	s.mu.Lock()
	for _, i := range missing {
		id := v.Name + "\x00" + string(keys[i])
		if l, ok := claimed[id]; ok {
			loads[i] = l
			continue
		}
		l, ok := s.inflight[id]
		if !ok {
			l = &load{done: make(chan struct{})}
			s.inflight[id] = l
			mine = append(mine, i)
		}
		claimed[id], loads[i] = l, l
	}
	s.mu.Unlock()
	if len(mine) > 0 {
		// The load serves every request waiting for these keys, so it
		// runs on a context of its own: a first requester that gives up
		// (its deadline, a client gone) must not fail the others, and
		// what it loads is cached for them anyway.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readThroughTimeout)
		go func() {
			defer cancel()
			got, err := s.readThrough(lctx, repo, v, keys, mine, now)
			s.mu.Lock()
			for _, i := range mine {
				id := v.Name + "\x00" + string(keys[i])
				l := s.inflight[id]
				delete(s.inflight, id)
				l.row, l.err = got[i], err
				close(l.done)
			}
			s.mu.Unlock()
		}()
	}
	for _, i := range missing {
		l := loads[i]
		select {
		case <-l.done:
			if l.err != nil {
				return nil, l.err
			}
			found[i] = l.row
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return found, nil
}

// cached returns the tier's row for key: (nil, true) for a fresh "no row"
// mark, (nil, false) when the tier does not know.
func (s *Store) cached(view string, key []byte, now time.Time) (*onlinetier.Row, bool) {
	r, ok := s.tier.Get(view, key)
	if !ok {
		return nil, false
	}
	if r.EventTS == absentEvent {
		if now.Sub(time.Unix(0, r.CreatedTS)) > s.opt.MissTTL {
			return nil, false
		}
		return nil, true
	}
	return r, true
}

// readThrough loads the latest rows of keys[idx] in one query, caches
// them (and the absence of the others), and returns them by index.
func (s *Store) readThrough(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, keys [][]byte, idx []int, now time.Time) (map[int]*onlinetier.Row, error) {
	ask := make([][]any, len(idx))
	byKey := map[string]int{}
	for n, i := range idx {
		ask[n] = decodeTuple(keys[i])
		byKey[string(keys[i])] = i
	}
	s.readThroughs.Add(1)
	start := time.Now()
	latest, err := s.off.Latest(ctx, repo, v, ask, now)
	s.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	got := make(map[int]*onlinetier.Row, len(idx))
	for _, lr := range latest {
		_, k, err := encodeTuple(lr.Keys)
		if err != nil {
			return nil, err
		}
		i, ok := byKey[string(k)]
		if !ok {
			continue
		}
		r := toTier(v, lr)
		got[i] = r
		s.tier.Put(v.Name, keys[i], r)
	}
	for _, i := range idx {
		if got[i] == nil {
			s.tier.Put(v.Name, keys[i], &onlinetier.Row{EventTS: absentEvent, CreatedTS: now.UnixNano()})
		}
	}
	return got, nil
}

// appendKey reads a view's join keys from entity row i and appends their
// encoding (see encodeTuple) to buf.
func appendKey(buf []byte, ents []definitions.Entity, rows EntityRows, i int) ([]byte, error) {
	for _, e := range ents {
		kv, ok := rows.JoinKey(i, e.JoinKey)
		if !ok {
			return nil, fmt.Errorf("missing join key %q (entity %q)", e.JoinKey, e.Name)
		}
		switch {
		case kv.IsInt && e.Type != definitions.Int64:
			return nil, fmt.Errorf("join key %q is %s, got the integer %d", e.JoinKey, e.Type, kv.Int)
		case !kv.IsInt && e.Type == definitions.Int64:
			// Text clients (a CLI, curl) send keys as text; an int64
			// key's text must be an integer.
			n, err := strconv.ParseInt(kv.Str, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("join key %q is int64, got the string %q", e.JoinKey, kv.Str)
			}
			buf = appendInt(buf, n)
		case kv.IsInt:
			buf = appendInt(buf, kv.Int)
		default:
			buf = appendStr(buf, kv.Str)
		}
	}
	return buf, nil
}

func appendInt(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 'i'), uint64(n))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(append(b, 's'), uint64(len(s)))
	return append(b, s...)
}

// decodeTuple reverses encodeTuple.
func decodeTuple(b []byte) []any {
	var parts []any
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		if tag == 'i' {
			parts = append(parts, int64(binary.BigEndian.Uint64(b)))
			b = b[8:]
			continue
		}
		n, w := binary.Uvarint(b)
		parts = append(parts, string(b[w:w+int(n)]))
		b = b[w+int(n):]
	}
	return parts
}

// encodeTuple encodes key parts unambiguously: a string as its length and
// bytes, an int64 as 8 big-endian bytes, each behind a type tag.
func encodeTuple(parts []any) ([]any, []byte, error) {
	var b []byte
	for _, p := range parts {
		switch x := p.(type) {
		case string:
			b = appendStr(b, x)
		case int64:
			b = appendInt(b, x)
		default:
			return nil, nil, fmt.Errorf("%T is not a join key value", p)
		}
	}
	return parts, b, nil
}

// toTier converts a row read from the offline store, whose values are of
// the types onlinetier.NewRow takes (see offline.LatestRow); any other is a
// bug in that contract, and panics.
func toTier(v *definitions.FeatureView, lr offline.LatestRow) *onlinetier.Row {
	r, err := onlinetier.NewRow(lr.EventTS, lr.CreatedTS, lr.Values)
	if err != nil {
		panic(fmt.Sprintf("onlinestore: feature view %q: an offline row: %v", v.Name, err))
	}
	return r
}

// fromTier returns value j of a cached row in its Go form, by its declared
// type. An empty array, nil or not when it was cached, comes back empty
// and non-nil.
func fromTier(t definitions.ValueType, r *onlinetier.Row, j int) any {
	if r.Kind(j) == onlinetier.Null {
		return nil
	}
	switch t {
	case definitions.Int32:
		return int32(r.Int(j))
	case definitions.Int64:
		return r.Int(j)
	case definitions.Bool:
		return r.Bool(j)
	case definitions.Timestamp:
		return r.Time(j)
	case definitions.Float32:
		return r.Float32(j)
	case definitions.Float64:
		return r.Float(j)
	case definitions.String:
		return r.Str(j)
	case definitions.ArrayFloat32:
		return r.Float32s(j)
	case definitions.ArrayInt64:
		return r.Int64s(j)
	case definitions.ArrayString:
		return r.Strings(j)
	}
	return nil
}

// Observe records a row just stored in the offline store. When the tier
// holds the key, the newer of the two rows is kept; a key it does not hold
// is left to be read through, since the row stored need not be the key's
// latest (an older event pushed to a replica that never read the key).
func (s *Store) Observe(v *definitions.FeatureView, keys []any, eventTS, createdTS int64, values []any) error {
	_, k, err := encodeTuple(keys)
	if err != nil {
		return err
	}
	r, err := onlinetier.NewRow(eventTS, createdTS, values)
	if err != nil {
		return err
	}
	s.tier.Refresh(v.Name, k, r)
	return nil
}
