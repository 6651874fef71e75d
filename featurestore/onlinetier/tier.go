// Package onlinetier is the in-memory online tier of the feature store: the
// latest row per (feature view, entity key), held in sharded LRU caches
// bounded by a byte budget. It is a cache, not the truth: a key it does not
// hold is read through from the offline store by its caller.
package onlinetier

import (
	"bytes"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// entryOverhead is what one cached entry costs beyond its key and its
// row's encoding: the entry (48 bytes), the LRU's list element (80), the
// Row header (32) and the entry's share of the LRU's map (a 24-byte slot
// and a control byte, at the map's average load). TestAccountingMatchesHeap
// checks it against the heap.
const entryOverhead = 200

// size is what an entry holds: key was allocated with its capacity
// rounded up to its size class, and a row's encoding fills its allocation.
func size(key []byte, r *Row) int64 {
	return entryOverhead + int64(cap(key)) + int64(len(r.data))
}

// Options configures a Tier.
type Options struct {
	// BudgetBytes bounds the memory the tier holds (default 1 GiB).
	BudgetBytes int64
	// Shards is the number of independently locked LRUs (default 64).
	Shards int
}

// Tier is the sharded, byte-bounded cache of latest rows. It is safe for
// concurrent use.
type Tier struct {
	seed   [2]maphash.Seed
	shards []shard
	budget int64 // per shard

	hits, misses, evictions atomic.Uint64
}

type hashKey [2]uint64

type entry struct {
	key  []byte // view, 0, entity key: checked on every hit
	row  *Row
	size int64
}

type shard struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[hashKey, *entry]
	bytes int64
	_     [40]byte // keep shards on separate cache lines
}

// New returns an empty tier.
func New(opt Options) *Tier {
	if opt.BudgetBytes <= 0 {
		opt.BudgetBytes = 1 << 30
	}
	if opt.Shards <= 0 {
		opt.Shards = 64
	}
	t := &Tier{
		seed:   [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		shards: make([]shard, opt.Shards),
		budget: max(opt.BudgetBytes/int64(opt.Shards), 1),
	}
	for i := range t.shards {
		s := &t.shards[i]
		// The LRU's own count bound is never reached; bytes bound the shard.
		s.lru, _ = simplelru.NewLRU[hashKey, *entry](1<<62, func(_ hashKey, e *entry) {
			s.bytes -= e.size
		})
	}
	return t
}

// hash identifies (view, key) by 128 bits; the full key is still compared
// on every hit, so a collision costs a miss, never a wrong row.
func (t *Tier) hash(view string, key []byte) hashKey {
	var h hashKey
	for i := range h {
		var m maphash.Hash
		m.SetSeed(t.seed[i])
		m.WriteString(view)
		m.WriteByte(0)
		m.Write(key)
		h[i] = m.Sum64()
	}
	return h
}

func (t *Tier) shard(h hashKey) *shard { return &t.shards[h[0]%uint64(len(t.shards))] }

// fullKey is the key an entry stores: view, 0, key. Its capacity is its
// allocation's real size, for size.
func fullKey(view string, key []byte) []byte {
	full := slices.Grow([]byte(nil), len(view)+1+len(key))
	return append(append(append(full, view...), 0), key...)
}

func sameKey(stored []byte, view string, key []byte) bool {
	return len(stored) == len(view)+1+len(key) &&
		string(stored[:len(view)]) == view && stored[len(view)] == 0 &&
		bytes.Equal(stored[len(view)+1:], key)
}

// Get returns the cached latest row of key in view. The row is shared and
// must not be modified.
func (t *Tier) Get(view string, key []byte) (*Row, bool) {
	h := t.hash(view, key)
	s := t.shard(h)
	s.mu.Lock()
	e, ok := s.lru.Get(h)
	var row *Row
	if ok {
		row = e.row // Refresh replaces it in place, under the lock
	}
	s.mu.Unlock()
	if !ok || !sameKey(e.key, view, key) {
		t.misses.Add(1)
		return nil, false
	}
	t.hits.Add(1)
	return row, true
}

// Put caches row as the latest of key in view unless the tier holds a newer
// one; it reports whether row was stored. Rows are immutable once put.
func (t *Tier) Put(view string, key []byte, row *Row) bool {
	h := t.hash(view, key)
	s := t.shard(h)
	full := fullKey(view, key)
	e := &entry{key: full, row: row, size: size(full, row)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.lru.Peek(h); ok {
		if sameKey(old.key, view, key) && !row.newer(old.row) {
			return false
		}
		// Add replaces in place without the eviction callback.
		s.bytes -= old.size
	}
	s.lru.Add(h, e)
	s.bytes += e.size
	for s.bytes > t.budget && s.lru.Len() > 1 {
		s.lru.RemoveOldest()
		t.evictions.Add(1)
	}
	return true
}

// Refresh replaces the cached row of key in view with row, but only when
// the tier holds an entry for the key (a row or an absence mark) and row is
// newer than it; an absence mark (EventTS == math.MinInt64) is always
// replaced. It reports whether row was stored. A refresh keeps a cached row
// current without being a use of it: it counts no hit or miss and leaves the
// entry's place in the LRU order unchanged. Rows are immutable once stored.
func (t *Tier) Refresh(view string, key []byte, row *Row) bool {
	h := t.hash(view, key)
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Peek(h)
	if !ok || !sameKey(e.key, view, key) {
		return false
	}
	if e.row.EventTS != math.MinInt64 && !row.newer(e.row) {
		return false
	}
	// In place, so the LRU order stays; Get reads e.row under the lock.
	sz := size(e.key, row)
	s.bytes += sz - e.size
	e.row, e.size = row, sz
	for s.bytes > t.budget && s.lru.Len() > 1 {
		s.lru.RemoveOldest()
		t.evictions.Add(1)
	}
	return true
}

// Delete drops key of view from the tier.
func (t *Tier) Delete(view string, key []byte) {
	h := t.hash(view, key)
	s := t.shard(h)
	s.mu.Lock()
	if old, ok := s.lru.Peek(h); ok && sameKey(old.key, view, key) {
		s.lru.Remove(h)
	}
	s.mu.Unlock()
}

// Stats are the tier's counters.
type Stats struct {
	Hits, Misses, Evictions uint64
	Entries                 int
	Bytes                   int64
}

// Stats returns the counters and the current size.
func (t *Tier) Stats() Stats {
	st := Stats{Hits: t.hits.Load(), Misses: t.misses.Load(), Evictions: t.evictions.Load()}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Entries += s.lru.Len()
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}
