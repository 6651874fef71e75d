package onlinetier

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

func row(ev, cr int64, vals ...any) *Row {
	r, err := NewRow(ev, cr, vals)
	if err != nil {
		panic(err)
	}
	return r
}

func TestLatestRowWins(t *testing.T) {
	tier := New(Options{BudgetBytes: 1 << 20, Shards: 4})
	k := []byte("c1")
	steps := []struct {
		r      *Row
		stored bool
		want   int64
	}{
		{row(10, 1, int64(100)), true, 100},
		{row(9, 5, int64(90)), false, 100},  // older event
		{row(10, 0, int64(99)), false, 100}, // same event, older created
		{row(10, 2, int64(101)), true, 101}, // same event, newer created
		{row(10, 2, int64(102)), true, 102}, // a full tie: the later write wins
		{row(11, 0, int64(110)), true, 110},
	}
	for i, s := range steps {
		if got := tier.Put("v", k, s.r); got != s.stored {
			t.Fatalf("step %d: Put stored = %v, want %v", i, got, s.stored)
		}
		got, ok := tier.Get("v", k)
		if !ok || got.Int(0) != s.want {
			t.Fatalf("step %d: Get = %+v %v, want %d", i, got, ok, s.want)
		}
	}
	// Views and keys are separate namespaces, including keys that look
	// like another view's prefix.
	if _, ok := tier.Get("w", k); ok {
		t.Fatal("view w sees view v's row")
	}
	tier.Put("v\x00c", []byte("1"), row(1, 1, int64(7)))
	if got, _ := tier.Get("v", k); got.Int(0) != 110 {
		t.Fatal("a crafted view name collided with another key")
	}
	tier.Delete("v", k)
	if _, ok := tier.Get("v", k); ok {
		t.Fatal("deleted key still cached")
	}
}

// absent is the mark onlinestore caches for a key with no row.
func absent(at int64) *Row { return &Row{EventTS: math.MinInt64, CreatedTS: at} }

func TestRefresh(t *testing.T) {
	cases := []struct {
		name   string
		held   *Row // nil: the tier holds nothing for the key
		put    *Row
		stored bool
	}{
		{"nothing held", nil, row(10, 1, int64(1)), false},
		{"newer event", row(10, 1, int64(1)), row(11, 0, int64(2)), true},
		{"same event, newer created", row(10, 1, int64(1)), row(10, 2, int64(2)), true},
		{"full tie", row(10, 1, int64(1)), row(10, 1, int64(2)), true},
		{"same event, older created", row(10, 1, int64(1)), row(10, 0, int64(2)), false},
		{"older event", row(10, 1, int64(1)), row(9, 5, int64(2)), false},
		{"absence mark", absent(50), row(1, 0, int64(2)), true},
		{"absence mark by an older mark", absent(50), absent(10), true},
		{"row by an absence mark", row(10, 1, int64(1)), absent(99), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tier := New(Options{BudgetBytes: 1 << 20, Shards: 2})
			k := []byte("c1")
			if c.held != nil {
				tier.Put("v", k, c.held)
			}
			before := tier.Stats()
			if got := tier.Refresh("v", k, c.put); got != c.stored {
				t.Fatalf("Refresh = %v, want %v", got, c.stored)
			}
			after := tier.Stats()
			if after.Hits != before.Hits || after.Misses != before.Misses {
				t.Fatalf("Refresh counted a lookup: %+v, then %+v", before, after)
			}
			full := fullKey("v", k)
			want, wantBytes := c.held, int64(0)
			if c.stored {
				want = c.put
			}
			if want != nil {
				wantBytes = size(full, want)
			}
			if after.Bytes != wantBytes {
				t.Fatalf("accounted %d bytes, want %d", after.Bytes, wantBytes)
			}
			got, ok := tier.Get("v", k)
			if ok != (want != nil) || got != want {
				t.Fatalf("Get = %+v %v, want %+v", got, ok, want)
			}
			if tier.Refresh("w", k, row(99, 9, int64(9))) || tier.Refresh("v", []byte("c2"), row(99, 9, int64(9))) {
				t.Fatal("Refresh stored a key the tier did not hold")
			}
		})
	}
}

// TestRefreshKeepsLRUOrder: a refreshed entry is not a used one; it is
// still the first to go.
func TestRefreshKeepsLRUOrder(t *testing.T) {
	sz := size(fullKey("v", []byte("a")), row(1, 1, int64(1)))
	tier := New(Options{BudgetBytes: 2 * sz, Shards: 1})
	tier.Put("v", []byte("a"), row(1, 1, int64(1)))
	tier.Put("v", []byte("b"), row(1, 1, int64(1)))
	if !tier.Refresh("v", []byte("a"), row(2, 1, int64(2))) {
		t.Fatal("Refresh of a held key did not store")
	}
	tier.Put("v", []byte("c"), row(1, 1, int64(1)))
	if _, ok := tier.Get("v", []byte("a")); ok {
		t.Fatal("the refreshed entry was kept over a more recently used one")
	}
	if _, ok := tier.Get("v", []byte("b")); !ok {
		t.Fatal("the more recently used entry was evicted")
	}
}

// model is a naive single-shard LRU with a byte budget: the oracle.
type model struct {
	budget int64
	order  []string // most recent first
	sizes  map[string]int64
	rows   map[string]*Row
	total  int64
}

func (m *model) touch(k string) {
	for i, o := range m.order {
		if o == k {
			m.order = append(m.order[:i], m.order[i+1:]...)
			break
		}
	}
	m.order = append([]string{k}, m.order...)
}

func (m *model) put(k string, r *Row, sz int64) bool {
	if old, ok := m.rows[k]; ok {
		if !r.newer(old) {
			return false
		}
		m.total -= m.sizes[k]
	}
	m.rows[k], m.sizes[k] = r, sz
	m.total += sz
	m.touch(k)
	m.evict()
	return true
}

// refresh replaces a held row without touching the LRU order.
func (m *model) refresh(k string, r *Row, sz int64) bool {
	old, ok := m.rows[k]
	if !ok || (old.EventTS != math.MinInt64 && !r.newer(old)) {
		return false
	}
	m.total += sz - m.sizes[k]
	m.rows[k], m.sizes[k] = r, sz
	m.evict()
	return true
}

func (m *model) evict() {
	for m.total > m.budget && len(m.order) > 1 {
		last := m.order[len(m.order)-1]
		m.order = m.order[:len(m.order)-1]
		m.total -= m.sizes[last]
		delete(m.rows, last)
		delete(m.sizes, last)
	}
}

func (m *model) get(k string) (*Row, bool) {
	r, ok := m.rows[k]
	if ok {
		m.touch(k)
	}
	return r, ok
}

// TestMatchesNaiveLRU drives one shard and the naive model with the same
// random operations: same hits, same rows, same bytes, every step.
func TestMatchesNaiveLRU(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		budget := int64(2000 + rng.IntN(6000))
		tier := New(Options{BudgetBytes: budget, Shards: 1})
		m := &model{budget: budget, sizes: map[string]int64{}, rows: map[string]*Row{}}
		var hits, misses uint64
		for step := range 3000 {
			k := fmt.Sprintf("key-%d", rng.IntN(60))
			if op := rng.IntN(3); op < 2 {
				r := row(int64(rng.IntN(20)), int64(rng.IntN(3)), int64(step))
				if rng.IntN(4) == 0 {
					r = row(r.EventTS, r.CreatedTS, int64(step), string(make([]byte, rng.IntN(500))))
				}
				if rng.IntN(8) == 0 {
					r = absent(int64(step))
				}
				full := fullKey("v", []byte(k))
				if op == 0 {
					want := m.put(k, r, size(full, r))
					if got := tier.Put("v", []byte(k), r); got != want {
						t.Fatalf("seed %d step %d: Put(%s) = %v, model %v", seed, step, k, got, want)
					}
				} else {
					want := m.refresh(k, r, size(full, r))
					if got := tier.Refresh("v", []byte(k), r); got != want {
						t.Fatalf("seed %d step %d: Refresh(%s) = %v, model %v", seed, step, k, got, want)
					}
				}
			} else {
				want, wok := m.get(k)
				got, ok := tier.Get("v", []byte(k))
				if ok != wok || (ok && got != want) {
					t.Fatalf("seed %d step %d: Get(%s) = %v %v, model %v %v", seed, step, k, got, ok, want, wok)
				}
				if ok {
					hits++
				} else {
					misses++
				}
			}
			st := tier.Stats()
			if st.Bytes != m.total || st.Entries != len(m.rows) {
				t.Fatalf("seed %d step %d: %d bytes in %d entries, model %d in %d", seed, step, st.Bytes, st.Entries, m.total, len(m.rows))
			}
		}
		if st := tier.Stats(); st.Hits != hits || st.Misses != misses {
			t.Fatalf("seed %d: counters %+v, want %d hits %d misses", seed, st, hits, misses)
		}
	}
}

// TestBudgetHoldsAcrossShards: bytes stay within the budget plus at most
// one entry per shard, and what is cached is always the latest row.
func TestBudgetHoldsAcrossShards(t *testing.T) {
	const budget = 64 << 10
	tier := New(Options{BudgetBytes: budget, Shards: 8})
	latest := map[string]*Row{}
	rng := rand.New(rand.NewPCG(3, 3))
	var maxEntry int64
	for i := range 20000 {
		k := fmt.Sprint(rng.IntN(5000))
		r := row(int64(i), 0, int64(i))
		latest[k] = r
		tier.Put("v", []byte(k), r)
		maxEntry = max(maxEntry, size(fullKey("v", []byte(k)), r))
		if st := tier.Stats(); st.Bytes > budget+8*maxEntry {
			t.Fatalf("step %d: %d bytes cached, budget %d", i, st.Bytes, budget)
		}
	}
	st := tier.Stats()
	if st.Evictions == 0 || st.Entries == 0 {
		t.Fatalf("stats %+v: the budget never evicted", st)
	}
	for k, want := range latest {
		if got, ok := tier.Get("v", []byte(k)); ok && got != want {
			t.Fatalf("key %s: cached row %+v is not the latest %+v", k, got, want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	tier := New(Options{BudgetBytes: 1 << 16, Shards: 4})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				k := []byte(fmt.Sprint((i * (g + 1)) % 300))
				if i%3 == 0 {
					tier.Put("v", k, row(int64(i), int64(g), int64(i)))
				} else if i%6 == 1 {
					tier.Refresh("v", k, row(int64(i), int64(g), int64(i)))
				} else if r, ok := tier.Get("v", k); ok && r.Int(0) != r.EventTS {
					t.Errorf("row %+v holds another row's value", r)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkGetHit(b *testing.B) {
	tier := New(Options{})
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("customer-%06d", i))
		tier.Put("customer_stats", keys[i], floatRow(20))
	}
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := tier.Get("customer_stats", keys[i&1023]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	perOp := time.Since(start) / time.Duration(b.N)
	allocs := testing.AllocsPerRun(1000, func() { tier.Get("customer_stats", keys[7]) })
	_ = benchrec.Record(benchrec.Result{Area: "online features", Benchmark: "featurestore/onlinetier " + b.Name(),
		Measure: "online tier hit, 20 float64 features, parallel readers", Value: fmt.Sprintf("%d ns, %.0f allocs", perOp.Nanoseconds(), allocs),
		Target: "0 allocs", Met: benchrec.Met(allocs == 0)})
}
