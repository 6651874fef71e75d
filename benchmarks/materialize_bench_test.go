package benchmarks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/materialize"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
)

const materializeRepo = `
entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: customer_profile
    entities: [customer]
    ttl: 0
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: category, type: string}
      - {name: opt_in, type: bool}
      - {name: score, type: float32}
`

// BenchmarkMaterialize loads the latest row of 10M keys (12M rows: 2M keys
// have an older row too) into an online tier with a 1 GiB budget, as
// `tailor materialize` does. Two floors from the same run: ClickHouse alone
// running the same latest-row-per-key query into FORMAT Null
// (clickhouse-client), and a raw scan of the table's rows. Set
// TAILOR_BENCH_MATERIALIZE_KEYS to change the key count.
func BenchmarkMaterialize(b *testing.B) {
	e := setup(b)
	keys := 10_000_000
	if s := os.Getenv("TAILOR_BENCH_MATERIALIZE_KEYS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("TAILOR_BENCH_MATERIALIZE_KEYS=%q: %v", s, err)
		}
		keys = n
	}
	ctx := context.Background()
	store, err := offline.Open(ctx, e.srv.DSN(), offline.Options{Database: "bench_materialize", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	repo, err := definitions.Parse(map[string][]byte{"repo.yaml": []byte(materializeRepo)})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := store.Apply(ctx, repo, "bench"); err != nil {
		b.Fatal(err)
	}
	v, _ := repo.View("customer_profile")
	e.sql(b, fmt.Sprintf(`TRUNCATE TABLE bench_materialize.fv_customer_profile;
		INSERT INTO bench_materialize.fv_customer_profile (customer_id, event_ts, created_ts, orders, spend, category, opt_in, score)
			SELECT concat('c', toString(number %% %d)), toDateTime(1700000000 + intHash32(number) %% 5000000), toDateTime(1700000000),
				number %% 17, number / 7, concat('cat', toString(number %% 9)), number %% 2, toFloat32(number %% 1000) / 1000
			FROM numbers(%d)`, keys, keys+keys/5))
	latest := ("SELECT customer_id, argMax(tuple(orders, spend, category, opt_in, score), (event_ts, created_ts)) FROM bench_materialize.fv_customer_profile WHERE event_ts <= now() GROUP BY customer_id FORMAT Null")
	b.ResetTimer()
	for range b.N {
		chOnly := timed(func() { e.sql(b, latest) })
		scan := timed(func() {
			e.sql(b, "SELECT customer_id, event_ts, created_ts, orders, spend, category, opt_in, score FROM bench_materialize.fv_customer_profile FORMAT Null")
		})
		tier := onlinetier.New(onlinetier.Options{BudgetBytes: 1 << 30})
		online := onlinestore.New(store, tier, onlinestore.Options{})
		var res []materialize.Result
		wall := timed(func() {
			var err error
			res, err = materialize.Run(ctx, store, repo, online, materialize.Options{Views: []string{v.Name}})
			if err != nil {
				b.Fatal(err)
			}
		})
		if res[0].Keys != int64(keys) {
			b.Fatalf("materialized %d keys, want %d", res[0].Keys, keys)
		}
		st := tier.Stats()
		rate := float64(keys) / wall.Seconds()
		b.ReportMetric(rate, "keys/s")
		b.ReportMetric(wall.Seconds(), "materialize_s")
		b.ReportMetric(chOnly.Seconds(), "clickhouse_latest_query_s")
		b.ReportMetric(scan.Seconds(), "raw_scan_s")
		b.ReportMetric(wall.Seconds()/chOnly.Seconds(), "ratio_vs_clickhouse_query")
		b.ReportMetric(float64(st.Entries), "tier_entries")
		record(b, benchrec.Result{Area: "online features", Measure: fmt.Sprintf("tailor materialize, %d keys (%d rows) into a 1 GiB tier", keys, keys+keys/5),
			Value: fmt.Sprintf("%.1f s = %.0f keys/s", wall.Seconds(), rate), Floor: fmt.Sprintf("ClickHouse's own latest-row query: %.1f s", chOnly.Seconds()),
			Ratio: ratioText(wall.Seconds() / chOnly.Seconds())})
		b.Logf("materialize %d keys (%d rows) on %s: %.1fs = %.0f keys/s; ClickHouse's own latest-row query %.1fs (ratio %.2fx), raw scan %.1fs; tier holds %d entries in %d MB of a 1 GiB budget",
			keys, keys+keys/5, machine(), wall.Seconds(), rate, chOnly.Seconds(), wall.Seconds()/chOnly.Seconds(), scan.Seconds(), st.Entries, st.Bytes>>20)
	}
}
