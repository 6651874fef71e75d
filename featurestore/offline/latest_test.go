package offline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// TestLatestManyAndLargeKeys: a read-through of 10,000 keys (the online
// request limit) and of keys of 300 KB, quotes, backslashes and NULs is
// answered exactly: keys travel as data, not inside the query text, so
// neither their number nor their size meets ClickHouse's query size.
func TestLatestManyAndLargeKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	repo := parseRepo(t, map[string]string{"repo.yaml": scanRepo})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	fv, _ := repo.View("cust")
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	odd := []string{strings.Repeat("x", 300<<10), "it's", `back\slash`, "nul\x00byte", "line\nbreak", "') OR 1=1 --", ""}
	tb := &table{names: []string{"customer_id", "event_ts", "created_ts", "n"},
		types: []arrow.DataType{arrow.BinaryTypes.String, ts, ts, arrow.PrimitiveTypes.Int64}}
	want := map[string]int64{}
	for i := range 10_000 {
		if i%3 == 0 {
			continue // every third key has no row
		}
		k := fmt.Sprintf("c%05d", i)
		want[k] = int64(i)
		tb.rows = append(tb.rows, []any{k, base, base, int64(i)})
	}
	for i, k := range odd {
		want[k] = int64(-i - 1)
		tb.rows = append(tb.rows, []any{k, base, base, int64(-i - 1)})
	}
	if _, err := s.Ingest(ctx, repo, "cust", "rows", tb.source(4096), offline.IngestOptions{}); err != nil {
		t.Fatal(err)
	}
	var keys [][]any
	for i := range 10_000 - len(odd) {
		keys = append(keys, []any{fmt.Sprintf("c%05d", i)})
	}
	for _, k := range odd {
		keys = append(keys, []any{k})
	}
	got, err := s.Latest(ctx, repo, fv, keys, base.Add(time.Hour))
	if err != nil {
		t.Fatalf("latest of %d keys: %v", len(keys), err)
	}
	seen := map[string]bool{}
	for _, r := range got {
		k := r.Keys[0].(string)
		if seen[k] {
			t.Fatalf("key %.20q answered twice", k)
		}
		seen[k] = true
		w, ok := want[k]
		if !ok {
			t.Fatalf("key %.20q answered but has no row", k)
		}
		if r.Values[0] != w {
			t.Fatalf("key %.20q: n = %v, want %d", k, r.Values[0], w)
		}
	}
	n := 0
	for _, k := range keys {
		if _, ok := want[k[0].(string)]; ok {
			n++
			if !seen[k[0].(string)] {
				t.Fatalf("key %.20q has a row but was not answered", k[0])
			}
		}
	}
	if len(got) != n {
		t.Fatalf("%d rows, want %d", len(got), n)
	}
}
