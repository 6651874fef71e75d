package offline_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// TestLeasesOfDeadProcesses: a live process's lease keeps its tables and
// holds snapshot watermarks back however long it runs; once the process
// stops renewing (killed), its ingestion stops holding watermarks within
// seconds and the next sweep drops its tables.
func TestLeasesOfDeadProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other := openStore(t)
	db := other.Database()
	owner, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()

	id := offline.NewLeaseID()
	stage := "_stage_v_" + id
	tables, err := owner.Lease(ctx, id, offline.LeaseTables, time.Time{}, offline.TableName{DB: db, Name: stage})
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Conn().Exec(ctx, "CREATE TABLE "+db+"."+stage+" (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	from, err := owner.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from = from.Add(-time.Hour)
	ingest, err := owner.Lease(ctx, offline.NewLeaseID(), offline.LeaseIngest, from)
	if err != nil {
		t.Fatal(err)
	}
	exists := func() bool {
		var n uint64
		if err := other.Conn().QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, stage).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	// Alive: nothing is taken from it, sweep after sweep.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		other.Sweep(ctx)
		if !exists() {
			t.Fatal("a sweep dropped the table of a live lease")
		}
		if !tables.Held() || !ingest.Held() {
			t.Fatal("a live lease does not count as held")
		}
	}
	w, err := other.SnapshotWatermark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Equal(from) {
		t.Fatalf("watermark %s with a live ingestion stored from %s", w, from)
	}

	owner.Die()
	died := time.Now()
	for {
		w, err := other.SnapshotWatermark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w.After(from) {
			break
		}
		if time.Since(died) > 5*time.Second {
			t.Fatalf("the dead ingestion still holds the watermark %s after %s", w, time.Since(died))
		}
	}
	t.Logf("a dead ingestion stopped holding the watermark after %s", time.Since(died).Round(100*time.Millisecond))
	for exists() {
		if time.Since(died) > 15*time.Second {
			t.Fatalf("the table of a dead lease is still there %s after", time.Since(died))
		}
		time.Sleep(500 * time.Millisecond)
		other.Sweep(ctx)
	}
	t.Logf("its table was swept %s after", time.Since(died).Round(100*time.Millisecond))
}

// TestIngestRefusesToPublishAfterLosingItsLease: when the token that
// proves an ingestion's process alive ends while the process lives (an
// administrator killed the query), snapshots may have judged the
// ingestion dead meanwhile; it then refuses to publish, and nothing of
// the file becomes visible.
func TestIngestRefusesToPublishAfterLosingItsLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openStore(t)
	repo := parseRepo(t, map[string]string{"repo.yaml": scanRepo})
	if _, _, err := s.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tb := &table{names: []string{"customer_id", "event_ts", "created_ts", "n"},
		types: []arrow.DataType{arrow.BinaryTypes.String, ts, ts, arrow.PrimitiveTypes.Int64},
		rows:  [][]any{{"a", base, base, int64(1)}, {"b", base, base, int64(2)}}}
	src := &gatedSource{memSource: tb.source(1), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Ingest(ctx, repo, "cust", "gated", src, offline.IngestOptions{BatchRows: 1})
		done <- err
	}()
	for {
		var n uint64
		if err := s.Conn().QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND startsWith(name, '_stage_')", s.Database()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Conn().Exec(ctx, "KILL QUERY WHERE startsWith(query_id, 'tailor-lease-holder-') SYNC"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the token notices
	close(src.release)
	err := <-done
	if !errors.Is(err, offline.ErrLeaseLost) {
		t.Fatalf("ingest after its token was killed: %v, want ErrLeaseLost", err)
	}
	var n uint64
	if err := s.Conn().QueryRow(ctx, "SELECT count() FROM "+s.TableOf(mustView(t, repo, "cust"))).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows visible after a refused ingestion", n)
	}
	// A new ingestion takes a new lease and loads.
	if _, err := s.Ingest(ctx, repo, "cust", "again", tb.source(1), offline.IngestOptions{}); err != nil {
		t.Fatalf("ingest again: %v", err)
	}
}

func mustView(t *testing.T, repo *definitions.Repo, name string) *definitions.FeatureView {
	t.Helper()
	v, ok := repo.View(name)
	if !ok {
		t.Fatalf("no view %q", name)
	}
	return v
}
