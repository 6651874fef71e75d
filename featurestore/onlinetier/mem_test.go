package onlinetier

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.heap = s.HeapAlloc
}

// perEntry caches n rows of vals under keys like a customer id and returns
// the live heap they add per entry, as measured and as the tier accounts
// for it against its budget.
func perEntry(n int, vals []any) (heap, accounted float64) {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "customer-%06d", i)
	}
	var before, after runtimeMem
	before.read()
	tier := New(Options{})
	for i := range keys {
		r, err := NewRow(1, 1, vals)
		if vals == nil {
			r = &Row{EventTS: math.MinInt64, CreatedTS: 1} // onlinestore's absence mark
		}
		if err != nil {
			panic(err)
		}
		tier.Put("customer_stats", keys[i], r)
	}
	after.read()
	runtime.KeepAlive(keys)
	runtime.KeepAlive(tier)
	return float64(after.heap-before.heap) / float64(n), float64(tier.Stats().Bytes) / float64(n)
}

var rowShapes = []struct {
	name string
	vals []any
}{
	{"float64x20", floatValues(20)},
	{"mixed", mixedValues()},
	{"absent", nil},
	{"int64x1", []any{int64(1)}},
	{"string4k", []any{strings.Repeat("x", 4000)}},
}

// TestAccountingMatchesHeap: what the tier accounts per entry against its
// budget is within 10% of the heap an entry really holds, across row
// shapes and at several fills of the LRUs' maps.
func TestAccountingMatchesHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	for _, c := range rowShapes {
		for _, n := range []int{10_000, 40_000} {
			heap, accounted := perEntry(n, c.vals)
			t.Logf("%s, %d entries: heap %.0f B/entry, accounted %.0f", c.name, n, heap, accounted)
			if math.Abs(accounted-heap) > 0.1*heap {
				t.Errorf("%s, %d entries: accounted %.0f B/entry, the heap holds %.0f", c.name, n, accounted, heap)
			}
		}
	}
}

// BenchmarkEntryBytes reports the heap one cached entry holds, key, row
// and the tier's own structures included, against its payload: the values'
// bytes at their natural width (the key, "customer_stats" and a 15-byte
// id, is not payload).
func BenchmarkEntryBytes(b *testing.B) {
	for _, c := range rowShapes[:2] {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				heap, accounted := perEntry(100_000, c.vals)
				b.ReportMetric(heap, "bytes/entry")
				b.ReportMetric(float64(payload(c.vals)), "payload-bytes")
				b.ReportMetric(accounted, "accounted-bytes/entry")
			}
		})
	}
}
