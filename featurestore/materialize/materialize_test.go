package materialize_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/materialize"
	"github.com/tailorhq/tailor/featurestore/offline"
)

var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: orders, type: int64}
  - name: other
    entities: [customer]
    features:
      - {name: n, type: int64}
`

// world is a fresh database with defs applied and keys customers c0..
// holding one row each (orders = the number).
func world(t *testing.T, keys int) (*offline.Store, *definitions.Repo) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "mat_" + hex.EncodeToString(b)
	store, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = store.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		store.Close()
	})
	repo, err := definitions.Parse(map[string][]byte{"defs.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	if err := store.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO %s.fv_cust (customer_id, event_ts, created_ts, orders)
		SELECT concat('c', toString(number)), now() - 60, now() - 60, number FROM system.numbers LIMIT %d`, db, keys)); err != nil {
		t.Fatal(err)
	}
	return store, repo
}

// sink records what it is given, and fails on a chosen key.
type sink struct {
	mu     sync.Mutex
	rows   map[string]int64
	failOn string
}

func (s *sink) Load(v *definitions.FeatureView, r offline.LatestRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := v.Name + "/" + r.Keys[0].(string)
	if k == s.failOn {
		return errors.New("tier on fire")
	}
	if s.rows == nil {
		s.rows = map[string]int64{}
	}
	s.rows[k] = r.Values[0].(int64)
	return nil
}

func (s *sink) Refresh(v *definitions.FeatureView, r offline.LatestRow) (bool, error) {
	return true, s.Load(v, r)
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	store, repo := world(t, 10_000)

	t.Run("every key, progress to the end", func(t *testing.T) {
		var s sink
		var last materialize.Progress
		res, err := materialize.Run(ctx, store, repo, &s, materialize.Options{Views: []string{"cust"}, Progress: func(p materialize.Progress) { last = p }})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Keys != 10_000 || res[0].Stopped || len(s.rows) != 10_000 || s.rows["cust/c1234"] != 1234 {
			t.Fatalf("results %+v, %d rows loaded (c1234=%d)", res, len(s.rows), s.rows["cust/c1234"])
		}
		if !last.Done || last.Keys != 10_000 {
			t.Fatalf("last progress %+v", last)
		}
	})
	t.Run("a failing sink fails the run naming the key", func(t *testing.T) {
		s := sink{failOn: "cust/c777"}
		_, err := materialize.Run(ctx, store, repo, &s, materialize.Options{})
		if err == nil || !contains(err.Error(), "c777", "tier on fire") {
			t.Fatalf("error %v, want one naming key c777 and the cause", err)
		}
	})
	t.Run("stops when full", func(t *testing.T) {
		var s sink
		full := func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.rows) >= 1000 }
		res, err := materialize.Run(ctx, store, repo, &s, materialize.Options{Full: full})
		if err != nil {
			t.Fatal(err)
		}
		if !res[0].Stopped || res[0].Keys >= 10_000 || !res[1].Stopped {
			t.Fatalf("results %+v, want both views stopped early", res)
		}
	})
	t.Run("unknown views are named", func(t *testing.T) {
		_, err := materialize.Run(ctx, store, repo, &sink{}, materialize.Options{Views: []string{"cust", "nope", "gone"}})
		var uv *materialize.UnknownViewError
		if !errors.As(err, &uv) || !contains(err.Error(), `"nope"`, `"gone"`) {
			t.Fatalf("error %v, want an UnknownViewError naming both", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := materialize.Run(cctx, store, repo, &sink{}, materialize.Options{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
}

// TestFollower checks a poll hands over rows stored since the last one,
// in a view the follower was never told about when it started.
func TestFollower(t *testing.T) {
	ctx := context.Background()
	store, repo := world(t, 3)
	var s sink
	f := materialize.NewFollower(store, func() *definitions.Repo { return repo }, &s, slog.New(slog.DiscardHandler))
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO %s.fv_other (customer_id, event_ts, created_ts, n)
		SELECT 'c9', now() - 1, now() - 1, 42`, store.Database())); err != nil {
		t.Fatal(err)
	}
	if err := f.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if s.rows["other/c9"] != 42 {
		t.Fatalf("after a poll: %v, want other/c9=42", s.rows)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
