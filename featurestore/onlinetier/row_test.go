package onlinetier

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// floatValues is a row of n float64 features.
func floatValues(n int) []any {
	vals := make([]any, n)
	for j := range vals {
		vals[j] = float64(j) + 0.5
	}
	return vals
}

func floatRow(n int) *Row { return row(1, 1, floatValues(n)...) }

// mixedValues is a row of every kind: 12 features, 137 bytes of payload.
func mixedValues() []any {
	return []any{
		int64(7), int32(3), float32(1.5), 2.5, true, time.UnixMicro(1_700_000_000_000_000).UTC(),
		strings.Repeat("s", 16), "", nil,
		make([]float32, 8), make([]int64, 4), []string{"aaaaaaaa", "bbbbbbbb", "cccccccc"},
	}
}

// payload is the bytes of values in their natural width: what a perfect
// encoding would hold.
func payload(vals []any) int {
	n := 0
	for _, v := range vals {
		switch x := v.(type) {
		case int32, float32:
			n += 4
		case int64, float64, time.Time:
			n += 8
		case bool:
			n++
		case string:
			n += len(x)
		case []float32:
			n += 4 * len(x)
		case []int64:
			n += 8 * len(x)
		case []string:
			for _, s := range x {
				n += len(s)
			}
		}
	}
	return n
}

var randomBytes = func() []byte {
	b := make([]byte, 1<<16)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}()

// randValue draws a value of a random kind, favouring the edges: NaNs with
// payloads, infinities, -0, empty and nil arrays, strings of any bytes and
// lengths across the uvarint boundaries.
func randValue(rng *rand.Rand) any {
	str := func() string {
		n := []int{0, 1, 7, 127, 128, 300, 20000}[rng.IntN(7)]
		at := rng.IntN(len(randomBytes) - n)
		return string(randomBytes[at : at+n])
	}
	f64 := func() float64 {
		switch rng.IntN(6) {
		case 0:
			return math.Float64frombits(0x7ff0_0000_0000_0001 + rng.Uint64N(1<<51)) // a NaN, payload kept
		case 1:
			return math.Inf(1 - 2*rng.IntN(2))
		case 2:
			return math.Copysign(0, -1)
		case 3:
			return math.Float64frombits(rng.Uint64())
		}
		return rng.NormFloat64()
	}
	f32 := func() float32 {
		if rng.IntN(3) == 0 {
			return math.Float32frombits(0x7fc0_0001 + rng.Uint32N(1<<20)) // a quiet NaN with payload
		}
		return math.Float32frombits(rng.Uint32())
	}
	n := rng.IntN(5)
	switch rng.IntN(11) {
	case 0:
		return nil
	case 1:
		return int32(rng.Uint32())
	case 2:
		return int64(rng.Uint64())
	case 3:
		return f32()
	case 4:
		return f64()
	case 5:
		return rng.IntN(2) == 0
	case 6:
		t := time.UnixMicro(rng.Int64N(1<<60) - 1<<59).Add(time.Duration(rng.IntN(1000)))
		return t.In(time.FixedZone("x", 3600))
	case 7:
		return str()
	case 8:
		if n == 0 && rng.IntN(2) == 0 {
			return []float32(nil)
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = f32()
		}
		return x
	case 9:
		if n == 0 && rng.IntN(2) == 0 {
			return []int64(nil)
		}
		x := make([]int64, n)
		for i := range x {
			x[i] = int64(rng.Uint64())
		}
		return x
	default:
		if n == 0 && rng.IntN(2) == 0 {
			return []string(nil)
		}
		x := make([]string, n)
		for i := range x {
			x[i] = str()
		}
		return x
	}
}

// same reports whether got is what NewRow promises for want: floats bit
// for bit, times to the microsecond in UTC, nil arrays as empty ones.
func same(want, got any) bool {
	switch w := want.(type) {
	case float32:
		g, ok := got.(float32)
		return ok && math.Float32bits(w) == math.Float32bits(g)
	case float64:
		g, ok := got.(float64)
		return ok && math.Float64bits(w) == math.Float64bits(g)
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g.Location() == time.UTC && g.Equal(w.Truncate(time.Microsecond))
	case []float32:
		g, ok := got.([]float32)
		if !ok || g == nil || len(g) != len(w) {
			return false
		}
		for i := range w {
			if math.Float32bits(w[i]) != math.Float32bits(g[i]) {
				return false
			}
		}
		return true
	case []int64:
		g, ok := got.([]int64)
		return ok && g != nil && equalSlices(w, g)
	case []string:
		g, ok := got.([]string)
		return ok && g != nil && equalSlices(w, g)
	}
	return want == got
}

func equalSlices[E comparable](a, b []E) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// wantKind is the kind NewRow gives v.
func wantKind(v any) Kind {
	switch v.(type) {
	case int32:
		return Int32
	case int64:
		return Int64
	case float32:
		return Float32
	case float64:
		return Float64
	case bool:
		return Bool
	case time.Time:
		return Timestamp
	case string:
		return String
	case []float32:
		return Float32s
	case []int64:
		return Int64s
	case []string:
		return Strings
	}
	return Null
}

// TestRowRoundTrip encodes random rows of every kind and reads each value
// back through every accessor, against the original values.
func TestRowRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 1000 {
		vals := make([]any, []int{0, 1, 2, 20, 127, 128, 300}[rng.IntN(7)])
		for j := range vals {
			vals[j] = randValue(rng)
		}
		ev, cr := int64(rng.Uint64()), int64(rng.Uint64())
		r, err := NewRow(ev, cr, vals)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if r.EventTS != ev || r.CreatedTS != cr || r.Len() != len(vals) {
			t.Fatalf("row %d: timestamps %d %d, %d values; want %d %d, %d", i, r.EventTS, r.CreatedTS, r.Len(), ev, cr, len(vals))
		}
		for j, want := range vals {
			k := wantKind(want)
			if got := r.Kind(j); got != k {
				t.Fatalf("row %d value %d: kind %v, want %v", i, j, got, k)
			}
			if got := r.Value(j); !same(want, got) {
				t.Fatalf("row %d value %d (%v): got %#v, want %#v", i, j, k, got, want)
			}
			checkAccessors(t, r, j, want)
		}
	}
}

// checkAccessors: each typed accessor gives the value for its kinds and
// the zero value for the others.
func checkAccessors(t *testing.T, r *Row, j int, want any) {
	t.Helper()
	var wi int64
	var wf float64
	var wf32 float32
	var ws string
	switch w := want.(type) {
	case int32:
		wi = int64(w)
	case int64:
		wi = w
	case bool:
		if w {
			wi = 1
		}
	case time.Time:
		wi = w.UnixMicro()
	case float32:
		wf, wf32 = float64(w), w
	case float64:
		wf, wf32 = w, float32(w)
	case string:
		ws = w
	}
	if got := r.Int(j); got != wi {
		t.Fatalf("value %d (%T): Int = %d, want %d", j, want, got, wi)
	}
	if got := r.Bool(j); got != (wi != 0) {
		t.Fatalf("value %d (%T): Bool = %v", j, want, got)
	}
	if got := r.Time(j); !got.Equal(time.UnixMicro(wi)) || got.Location() != time.UTC {
		t.Fatalf("value %d (%T): Time = %v, want Unix µs %d", j, want, got, wi)
	}
	if got := r.Float(j); math.Float64bits(got) != math.Float64bits(wf) {
		t.Fatalf("value %d (%T): Float = %v, want %v", j, want, got, wf)
	}
	if got := r.Float32(j); math.Float32bits(got) != math.Float32bits(wf32) {
		t.Fatalf("value %d (%T): Float32 = %v, want %v", j, want, got, wf32)
	}
	if got := r.Str(j); got != ws {
		t.Fatalf("value %d (%T): Str = %q, want %q", j, want, got, ws)
	}
	k := wantKind(want)
	if got := r.Float32s(j); (got != nil) != (k == Float32s) {
		t.Fatalf("value %d (%T): Float32s = %v", j, want, got)
	}
	if got := r.Int64s(j); (got != nil) != (k == Int64s) {
		t.Fatalf("value %d (%T): Int64s = %v", j, want, got)
	}
	if got := r.Strings(j); (got != nil) != (k == Strings) {
		t.Fatalf("value %d (%T): Strings = %v", j, want, got)
	}
}

func TestRowEdges(t *testing.T) {
	// A row without values, such as onlinestore's absence mark, has none.
	for _, r := range []*Row{{EventTS: math.MinInt64, CreatedTS: 5}, row(1, 2)} {
		if r.Len() != 0 {
			t.Fatalf("%+v: Len = %d", r, r.Len())
		}
	}
	// Values are copied: changing the input afterwards changes nothing.
	fs, ss := []float32{1, 2}, []string{"a"}
	vals := []any{fs, ss}
	r := row(1, 1, vals...)
	fs[0], ss[0], vals[0] = 9, "z", nil
	if got := r.Float32s(0); got[0] != 1 || r.Strings(1)[0] != "a" || r.Kind(0) != Float32s {
		t.Fatalf("the row changed with its input: %v %v", got, r.Strings(1))
	}
	// Arrays read are fresh: changing one does not change the row.
	r.Float32s(0)[0] = 7
	if r.Float32s(0)[0] != 1 {
		t.Fatal("an array read aliases the row")
	}
	for _, bad := range []any{1, uint8(1), []float64{1}, map[string]int{}} {
		if _, err := NewRow(1, 1, []any{int64(1), bad}); err == nil {
			t.Fatalf("NewRow took a %T", bad)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("reading past the last value did not panic")
		}
	}()
	row(1, 1, int64(1)).Int(1)
}

// TestRowScalarReadsDoNotAllocate: scalars and strings are read in place.
func TestRowScalarReadsDoNotAllocate(t *testing.T) {
	r := row(1, 1, mixedValues()...)
	allocs := testing.AllocsPerRun(100, func() {
		for j := range r.Len() {
			_ = r.Kind(j)
			_ = r.Int(j)
			_ = r.Float(j)
			_ = r.Float32(j)
			_ = r.Bool(j)
			_ = r.Time(j)
			_ = r.Str(j)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations reading scalars", allocs)
	}
}

func BenchmarkRowEncode(b *testing.B) {
	for _, c := range []struct {
		name string
		vals []any
	}{{"float64x20", floatValues(20)}, {"mixed", mixedValues()}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewRow(1, 1, c.vals); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRowRead(b *testing.B) {
	// The floor: the same floats in a plain slice.
	b.Run("float64x20/slice", func(b *testing.B) {
		fs := make([]float64, 20)
		for j, v := range floatValues(20) {
			fs[j] = v.(float64)
		}
		b.ReportAllocs()
		var sum float64
		for b.Loop() {
			for j := range fs {
				sum += fs[j]
			}
		}
		_ = sum
	})
	b.Run("float64x20", func(b *testing.B) {
		r := floatRow(20)
		b.ReportAllocs()
		var sum float64
		for b.Loop() {
			for j := range r.Len() {
				sum += r.Float(j)
			}
		}
		_ = sum
	})
	b.Run("mixed/scalars", func(b *testing.B) {
		r := row(1, 1, mixedValues()...)
		b.ReportAllocs()
		var n int
		for b.Loop() {
			for j := range r.Len() {
				n += int(r.Int(j)) + int(r.Float(j)) + len(r.Str(j))
			}
		}
		_ = n
	})
	// Value boxes each value and copies arrays, as onlinestore does.
	b.Run("mixed/Value", func(b *testing.B) {
		r := row(1, 1, mixedValues()...)
		b.ReportAllocs()
		for b.Loop() {
			for j := range r.Len() {
				_ = r.Value(j)
			}
		}
	})
}
