package offline_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

const scanRepo = `
entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: n, type: int64}
`

// gatedSource serves its first batch, then waits for release before the
// rest: an ingestion that is slow to commit.
type gatedSource struct {
	*memSource
	served  bool
	release chan struct{}
}

func (g *gatedSource) Next() (arrow.RecordBatch, error) {
	if g.served {
		<-g.release
	}
	g.served = true
	return g.memSource.Next()
}

// TestScanStoredSince checks the two insertion-time filters: keys touched
// since a watermark (their latest row chosen among all rows, so a backfill
// of older events does not win) and rows stored since it, including an
// ingestion that staged its rows before the watermark but committed after.
func TestScanStoredSince(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openStore(t)
	repo := parseRepo(t, map[string]string{"repo.yaml": scanRepo})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	fv, _ := repo.View("cust")
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := func(rs ...[]any) *table {
		return &table{names: []string{"customer_id", "event_ts", "created_ts", "n"},
			types: []arrow.DataType{arrow.BinaryTypes.String, ts, ts, arrow.PrimitiveTypes.Int64}, rows: rs}
	}
	ingest := func(src offline.RecordSource) {
		t.Helper()
		if _, err := s.Ingest(ctx, repo, "cust", "gen", src, offline.IngestOptions{BatchRows: 1}); err != nil {
			t.Fatalf("ingest: %v", err)
		}
	}
	// nextSecond waits until ClickHouse's clock has passed the second of
	// every row stored so far, and returns it: the watermark.
	nextSecond := func() time.Time {
		t.Helper()
		start, err := s.Now(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for {
			now, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if now.After(start) {
				return now
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	scan := func(opt offline.ScanOptions) []string {
		t.Helper()
		var got []string
		if _, err := s.ScanLatest(ctx, repo, fv, opt, func(r offline.LatestRow) error {
			got = append(got, fmt.Sprintf("%v=%v@%d", r.Keys[0], r.Values[0], r.EventTS-base.Unix()))
			return nil
		}); err != nil {
			t.Fatalf("scan: %v", err)
		}
		sort.Strings(got)
		return got
	}

	ingest(rows(
		[]any{"a", base.Add(100 * time.Second), base, int64(1)},
		[]any{"b", base.Add(100 * time.Second), base, int64(2)},
	).source(10))
	w := nextSecond()
	// A backfill of an older event for a, and a new key d.
	ingest(rows(
		[]any{"a", base.Add(50 * time.Second), base, int64(10)},
		[]any{"d", base.Add(70 * time.Second), base, int64(4)},
	).source(10))

	for _, tc := range []struct {
		name string
		opt  offline.ScanOptions
		want []string
	}{
		{"all", offline.ScanOptions{}, []string{"a=1@100", "b=2@100", "d=4@70"}},
		{"keys stored since", offline.ScanOptions{KeysStoredSince: w}, []string{"a=1@100", "d=4@70"}},
		{"rows stored since", offline.ScanOptions{RowsStoredSince: w}, []string{"a=10@50", "d=4@70"}},
		{"event window", offline.ScanOptions{Start: base.Add(60 * time.Second), End: base.Add(99 * time.Second)}, []string{"d=4@70"}},
		{"instant before the latest", offline.ScanOptions{At: base.Add(99 * time.Second)}, []string{"a=10@50", "d=4@70"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scan(tc.opt); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	// An ingestion staging rows before the watermark and committing after
	// it: its rows count as stored since the watermark.
	slow := &gatedSource{memSource: rows(
		[]any{"e", base.Add(10 * time.Second), base, int64(5)},
		[]any{"f", base.Add(10 * time.Second), base, int64(6)},
	).source(1), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Ingest(ctx, repo, "cust", "slow", slow, offline.IngestOptions{BatchRows: 1})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the first row reach the staging table
	w2 := nextSecond()
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatalf("slow ingest: %v", err)
	}
	// The scan looks back to when that ingestion began, so it may also
	// revisit rows stored just before it; it must not miss its rows.
	got := scan(offline.ScanOptions{RowsStoredSince: w2})
	for _, want := range []string{"e=5@10", "f=6@10"} {
		if !slices.Contains(got, want) {
			t.Errorf("rows stored since a watermark passed mid-ingestion: got %v, missing %s", got, want)
		}
	}
}

// TestWatermarks checks the materialization watermarks round-trip.
func TestWatermarks(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, ok, err := s.LastWatermark(ctx, "cust"); err != nil || ok {
		t.Fatalf("fresh store: ok=%v err=%v, want none", ok, err)
	}
	w1 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, w := range []offline.Watermark{{View: "cust", StoredBefore: w1, Keys: 3}, {View: "cust", StoredBefore: w1.Add(time.Hour), Keys: 7}, {View: "other", StoredBefore: w1.Add(2 * time.Hour)}} {
		if err := s.RecordWatermark(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := s.LastWatermark(ctx, "cust")
	if err != nil || !ok || !got.StoredBefore.Equal(w1.Add(time.Hour)) || got.Keys != 7 {
		t.Fatalf("LastWatermark = %+v, %v, %v; want the later one (7 keys at %s)", got, ok, err, w1.Add(time.Hour))
	}
}

// TestRetrieveAsOfWatermark exports the same entity rows before and after
// new rows (newer events and a new key) are stored: read as of the first
// snapshot's watermark, the second answer equals the first.
func TestRetrieveAsOfWatermark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openStore(t)
	repo := parseRepo(t, map[string]string{"repo.yaml": scanRepo})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := func(rs ...[]any) *table {
		return &table{names: []string{"customer_id", "event_ts", "created_ts", "n"},
			types: []arrow.DataType{arrow.BinaryTypes.String, ts, ts, arrow.PrimitiveTypes.Int64}, rows: rs}
	}
	ingest := func(tb *table) {
		t.Helper()
		if _, err := s.Ingest(ctx, repo, "cust", "gen", tb.source(10), offline.IngestOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ingest(rows([]any{"a", base, base, int64(1)}, []any{"b", base, base, int64(2)}))
	// Wait until the watermark has passed the rows just stored.
	var w time.Time
	for {
		var err error
		if w, err = s.SnapshotWatermark(ctx); err != nil {
			t.Fatal(err)
		}
		now, _ := s.Now(ctx)
		if w.After(now.Add(-time.Hour)) && w.Unix() > 0 {
			if got := exportAt(t, s, repo, w); got == "a=1 b=2 c=null" {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	first := exportAt(t, s, repo, w)
	ingest(rows([]any{"a", base.Add(time.Hour), base, int64(10)}, []any{"c", base, base, int64(3)}))
	if now := exportAt(t, s, repo, time.Time{}); now != "a=10 b=2 c=3" {
		t.Fatalf("latest export %q, want the new rows", now)
	}
	if again := exportAt(t, s, repo, w); again != first {
		t.Fatalf("as of the watermark: %q, first %q", again, first)
	}
}

// exportAt retrieves cust:n for a, b, c at a late instant, as of the
// watermark (zero: everything).
func exportAt(t *testing.T, s *offline.Store, repo *definitions.Repo, w time.Time) string {
	t.Helper()
	ctx := context.Background()
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ent := &table{names: []string{"customer_id", "event_timestamp"}, types: []arrow.DataType{arrow.BinaryTypes.String, ts},
		rows: [][]any{{"a", at}, {"b", at}, {"c", at}}}
	refs, err := repo.ResolveRefs([]string{"cust:n"})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := offline.JoinKeys(repo, refs)
	set, err := s.UploadEntities(ctx, "e", ent.source(10), offline.EntityOptions{JoinKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Drop(ctx)
	ret, err := s.Retrieve(ctx, repo, set, refs, offline.RetrieveOptions{StoredBefore: w})
	if err != nil {
		t.Fatal(err)
	}
	defer ret.Close()
	_, got := readAll(t, ret)
	var parts []string
	for _, r := range got {
		parts = append(parts, fmt.Sprintf("%v=%v", r[0], r[2]))
	}
	return strings.ReplaceAll(strings.Join(parts, " "), "<nil>", "null")
}

// TestRunningIngestionHoldsTheWatermark: while an ingestion is staging,
// the snapshot watermark stays before its rows, so a snapshot taken then
// cannot later gain them.
func TestRunningIngestionHoldsTheWatermark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openStore(t)
	repo := parseRepo(t, map[string]string{"repo.yaml": scanRepo})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	before, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slow := &gatedSource{memSource: (&table{names: []string{"customer_id", "event_ts", "created_ts", "n"},
		types: []arrow.DataType{arrow.BinaryTypes.String, ts, ts, arrow.PrimitiveTypes.Int64},
		rows:  [][]any{{"a", base, base, int64(1)}, {"b", base, base, int64(2)}}}).source(1), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Ingest(ctx, repo, "cust", "slow", slow, offline.IngestOptions{BatchRows: 1})
		done <- err
	}()
	time.Sleep(3 * time.Second) // the ingestion stages its first row and waits
	w, err := s.SnapshotWatermark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.After(before) {
		t.Errorf("watermark %s passed the start of a running ingestion (%s)", w, before)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := exportAt(t, s, repo, w); got != "a=null b=null c=null" {
		t.Errorf("as of a watermark taken mid-ingestion: %q, want none of its rows", got)
	}
	after, err := s.SnapshotWatermark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !after.After(w) {
		t.Errorf("watermark %s did not move on after the ingestion ended (was %s)", after, w)
	}
}
