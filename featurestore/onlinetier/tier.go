// Package onlinetier is the in-memory online tier of the feature store: the
// latest row per (feature view, entity key), held in sharded LRU caches
// bounded by a byte budget. It is a cache, not the truth: a key it does not
// hold is read through from the offline store by its caller.
package onlinetier

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// entryOverhead is what one cached entry costs beyond its key and its
// row's encoding: the entry (48 bytes, LRU links included), the Row header
// (32) and the entry's share of its shard's map (a 24-byte slot and a
// control byte, at the map's average load). TestAccountingMatchesHeap
// checks it against the heap.
const entryOverhead = 120

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

// entry is one cached row, linked into its shard's LRU list.
type entry struct {
	prev, next *entry
	key        string // view, 0, entity key: checked on every hit
	row        *Row
	size       int64 // accounted against the budget
}

// newEntry holds row under the full key of (view, key). Its size counts
// the key at its allocation's real size and the row's encoding, which
// fills its allocation (see Row).
func newEntry(view string, key []byte, row *Row) *entry {
	full := slices.Grow([]byte(nil), len(view)+1+len(key)) // capacity: the real allocation
	full = append(append(append(full, view...), 0), key...)
	return &entry{
		key:  unsafe.String(unsafe.SliceData(full), len(full)), // full is never written again
		row:  row,
		size: entryOverhead + int64(cap(full)) + int64(len(row.data)),
	}
}

// shard is one LRU: a map for lookups and a circular list through root,
// most recently used first.
type shard struct {
	mu    sync.Mutex
	items map[hashKey]*entry
	root  entry
	bytes int64
	_     [56]byte // keep shards on separate cache lines (128 bytes)
}

func (s *shard) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.root, s.root.next
	e.prev.next, e.next.prev = e, e
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
		s.items = map[hashKey]*entry{}
		s.root.prev, s.root.next = &s.root, &s.root
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

// hashFull is hash of an entry's full key.
func (t *Tier) hashFull(full string) hashKey {
	var h hashKey
	for i := range h {
		h[i] = maphash.String(t.seed[i], full)
	}
	return h
}

func (t *Tier) shard(h hashKey) *shard { return &t.shards[h[0]%uint64(len(t.shards))] }

func sameKey(stored string, view string, key []byte) bool {
	return len(stored) == len(view)+1+len(key) &&
		stored[:len(view)] == view && stored[len(view)] == 0 &&
		stored[len(view)+1:] == string(key)
}

// Get returns the cached latest row of key in view. The row is shared and
// must not be modified.
func (t *Tier) Get(view string, key []byte) (*Row, bool) {
	h := t.hash(view, key)
	s := t.shard(h)
	s.mu.Lock()
	e, ok := s.items[h]
	var row *Row
	if ok && sameKey(e.key, view, key) {
		s.unlink(e)
		s.pushFront(e)
		row = e.row // Refresh replaces it in place, under the lock
	}
	s.mu.Unlock()
	if row == nil {
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
	e := newEntry(view, key, row)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.items[h]; ok {
		if sameKey(old.key, view, key) && !row.newer(old.row) {
			return false
		}
		// The same key, or another whose hash collides: either way the
		// new entry takes the slot.
		s.unlink(old)
		s.bytes -= old.size
	}
	s.items[h] = e
	s.pushFront(e)
	s.bytes += e.size
	t.evict(s)
	return true
}

// evict drops the shard's least recently used entries until it is within
// its budget, keeping at least one.
func (t *Tier) evict(s *shard) {
	for s.bytes > t.budget && len(s.items) > 1 {
		e := s.root.prev
		s.unlink(e)
		delete(s.items, t.hashFull(e.key))
		s.bytes -= e.size
		t.evictions.Add(1)
	}
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
	e, ok := s.items[h]
	if !ok || !sameKey(e.key, view, key) {
		return false
	}
	if e.row.EventTS != math.MinInt64 && !row.newer(e.row) {
		return false
	}
	// In place, so the LRU order stays; Get reads e.row under the lock.
	grow := int64(len(row.data)) - int64(len(e.row.data))
	e.row, e.size = row, e.size+grow
	s.bytes += grow
	t.evict(s)
	return true
}

// Delete drops key of view from the tier.
func (t *Tier) Delete(view string, key []byte) {
	h := t.hash(view, key)
	s := t.shard(h)
	s.mu.Lock()
	if e, ok := s.items[h]; ok && sameKey(e.key, view, key) {
		s.unlink(e)
		delete(s.items, h)
		s.bytes -= e.size
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
		st.Entries += len(s.items)
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}
