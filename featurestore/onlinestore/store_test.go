package onlinestore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
)

var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

// setup applies one view keyed by an int64 and loads keys 0..n-1 with
// score = key * 10 and an event time an hour ago.
func setup(t *testing.T, n int) (*offline.Store, *definitions.Repo) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "t_" + hex.EncodeToString(b)
	ctx := context.Background()
	off, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = off.Conn().Exec(context.Background(), "DROP DATABASE "+db); off.Close() })
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(`entities: [{name: user, join_key: user_id, type: int64}]
feature_views:
  - {name: stats, entities: [user], features: [{name: score, type: int64}, {name: tag, type: string}]}
`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := off.Apply(ctx, repo, "test"); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).Unix()
	// Two rows per key: the later one wins.
	if err := off.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO %s.fv_stats (user_id, event_ts, created_ts, score, tag)
		SELECT toInt64(number %% %d), toDateTime(%d + intDiv(number, %d)), toDateTime(%d), (number %% %d) * 10 + intDiv(number, %d), toString(number)
		FROM numbers(%d)`, db, n, at-1, n, at, n, n, 2*n)); err != nil {
		t.Fatal(err)
	}
	return off, repo
}

func score(t *testing.T, res [][]onlinestore.Result, i int) any {
	t.Helper()
	if res[i][0].Status != onlinestore.Present {
		return res[i][0].Status
	}
	return res[i][0].Value()
}

// TestTinyBudgetStillAnswersRight: a tier far smaller than the data
// evicts constantly, and every answer is still the latest row.
func TestTinyBudgetStillAnswersRight(t *testing.T) {
	off, repo := setup(t, 500)
	tier := onlinetier.New(onlinetier.Options{BudgetBytes: 4 << 10, Shards: 2})
	s := onlinestore.New(off, tier, onlinestore.Options{})
	refs, _ := repo.ResolveRefs([]string{"stats:score"})
	for round := range 3 {
		var rows []map[string]any
		for k := range 500 {
			rows = append(rows, map[string]any{"user_id": int64((k*7 + round) % 500)})
		}
		rows = append(rows, map[string]any{"user_id": int64(10_000)}) // no such user
		res, err := s.Get(context.Background(), repo, refs, onlinestore.MapRows(rows))
		if err != nil {
			t.Fatal(err)
		}
		for i, row := range rows[:500] {
			k := row["user_id"].(int64)
			if got := score(t, res, i); got != k*10+1 {
				t.Fatalf("round %d user %d: %v, want %d", round, k, got, k*10+1)
			}
		}
		if got := score(t, res, 500); got != onlinestore.NotFound {
			t.Fatalf("unknown user: %v", got)
		}
	}
	if st := tier.Stats(); st.Bytes > 8<<10 || st.Evictions == 0 {
		t.Fatalf("tier %+v did not stay within its budget", st)
	}
}

// TestStampedeMakesOneQuery: concurrent lookups of the same missing keys
// share one read-through, and a key known absent is not asked again at once.
func TestStampedeMakesOneQuery(t *testing.T) {
	off, repo := setup(t, 10)
	s := onlinestore.New(off, onlinetier.New(onlinetier.Options{}), onlinestore.Options{MissTTL: time.Minute})
	refs, _ := repo.ResolveRefs([]string{"stats:score"})
	rows := []map[string]any{{"user_id": int64(3)}, {"user_id": int64(404)}}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Get(context.Background(), repo, refs, onlinestore.MapRows(rows))
			switch {
			case err != nil:
				errs <- err
			case res[0][0].Value() != int64(31) || res[1][0].Status != onlinestore.NotFound:
				errs <- fmt.Errorf("answer %+v", res)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.ReadThroughs(); n != 1 {
		t.Fatalf("%d read-through queries for one stampede, want 1", n)
	}
}

func TestBadKeys(t *testing.T) {
	off, repo := setup(t, 3)
	s := onlinestore.New(off, onlinetier.New(onlinetier.Options{}), onlinestore.Options{})
	refs, _ := repo.ResolveRefs([]string{"stats:*"})
	for _, row := range []map[string]any{{}, {"user_id": "x"}, {"user_id": 1.5}} {
		_, err := s.Get(context.Background(), repo, refs, onlinestore.MapRows{row})
		if _, ok := err.(*onlinestore.KeyError); !ok {
			t.Errorf("row %v: error %v, want a KeyError", row, err)
		}
	}
}

// slowProxy forwards TCP connections to a server, holding each answer
// back by delay: a slow ClickHouse.
func slowProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go func() { _, _ = io.Copy(s, c); s.Close() }()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, werr := c.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// TestReadThroughOutlivesItsFirstRequester: a read-through shared by
// several requests is not ended by the first one giving up: the others,
// still willing to wait, get the row.
func TestReadThroughOutlivesItsFirstRequester(t *testing.T) {
	base, repo := setup(t, 10)
	target := strings.TrimPrefix(dsn, "clickhouse://")
	target, _, _ = strings.Cut(target, "/")
	slow, err := offline.Open(context.Background(), "clickhouse://"+slowProxy(t, target, 5*time.Millisecond), offline.Options{Database: base.Database(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	s := onlinestore.New(slow, onlinetier.New(onlinetier.Options{}), onlinestore.Options{})
	refs, err := repo.ResolveRefs([]string{"stats:score"})
	if err != nil {
		t.Fatal(err)
	}
	key := onlinestore.MapRows{{"user_id": int64(7)}}
	impatient, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
	defer cancel()
	first := make(chan error, 1)
	go func() { _, err := s.Get(impatient, repo, refs, key); first <- err }()
	time.Sleep(time.Millisecond) // the first request has claimed the key
	res, err := s.Get(context.Background(), repo, refs, key)
	if err != nil {
		t.Fatalf("a patient request sharing an impatient one's read-through: %v", err)
	}
	if got := score(t, res, 0); got != int64(71) {
		t.Fatalf("score %v, want 71", got)
	}
	if err := <-first; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the impatient request: %v, want its deadline", err)
	}
}
