package benchmarks

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

const benchRepo = `
entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: ingest_target
    entities: [customer]
    ttl: 0
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: category, type: string}
      - {name: opt_in, type: bool}
  - name: cust
    entities: [customer]
    ttl: 720h
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: category, type: string}
      - {name: opt_in, type: bool}
  - name: prod
    entities: [product]
    ttl: 0
    features:
      - {name: popularity, type: float32}
      - {name: price, type: float64}
  - name: cust_prod
    entities: [customer, product]
    ttl: 168h
    features:
      - {name: views, type: int64}
`

func (e *env) applyRepo(b *testing.B) {
	b.Helper()
	dir := filepath.Join(e.dir, "repo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "repo.yaml"), []byte(benchRepo), 0o644); err != nil {
		b.Fatal(err)
	}
	e.tailorRun(b, "apply", dir)
}

// BenchmarkIngestCSV loads a 2M-row CSV with tailor ingest and, as the
// floor, with clickhouse-client into a table of the same structure.
func BenchmarkIngestCSV(b *testing.B) {
	e := setup(b)
	e.applyRepo(b)
	const rows = 2_000_000
	csv := filepath.Join(e.dir, "ingest.csv")
	e.sqlToFile(b, fmt.Sprintf(`SELECT concat('c', toString(number %% 100000)) AS customer_id,
		toDateTime(1700000000 + number) AS event_ts, number %% 17 AS orders, round(number / 7, 2) AS spend,
		concat('cat', toString(number %% 9)) AS category, number %% 2 AS opt_in
		FROM numbers(%d) FORMAT CSVWithNames`, rows), csv)
	e.sql(b, "CREATE TABLE IF NOT EXISTS bench.floor_ingest AS bench.fv_ingest_target")
	b.ResetTimer()
	for range b.N {
		e.sql(b, "TRUNCATE TABLE bench.floor_ingest")
		floor := timed(func() {
			e.sql(b, "INSERT INTO bench.floor_ingest (customer_id, event_ts, orders, spend, category, opt_in) FORMAT CSVWithNames", csv)
		})
		r := e.tailorRun(b, "ingest", "ingest_target", csv)
		tailorRate := rows / r.wall.Seconds()
		floorRate := rows / floor.Seconds()
		b.ReportMetric(tailorRate, "tailor_rows/s")
		b.ReportMetric(floorRate, "clickhouse-client_rows/s")
		b.ReportMetric(tailorRate/floorRate, "ratio_vs_floor")
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak_RSS_MB")
		record(b, benchrec.Result{Area: "offline store", Measure: fmt.Sprintf("tailor ingest of a %d-row CSV", rows), Value: fmt.Sprintf("%.0f rows/s, peak RSS %d MB", tailorRate, r.peakRSS>>20),
			Floor: fmt.Sprintf("clickhouse-client INSERT of the same file: %.0f rows/s", floorRate), Ratio: ratioText(tailorRate / floorRate),
			Target: ">= 0.5x, RSS <= 300 MB", Met: benchrec.Met(tailorRate/floorRate >= 0.5 && r.peakRSS <= 300<<20)})
		b.Logf("ingest %d CSV rows on %s: tailor %.0f rows/s, clickhouse-client %.0f rows/s, ratio %.2fx (target >= 0.5x), tailor peak RSS %d MB",
			rows, machine(), tailorRate, floorRate, tailorRate/floorRate, r.peakRSS>>20)
	}
}

// BenchmarkExportPIT exports a point-in-time join of entity sets over three
// views holding 10M rows, against the floor of a raw ClickHouse scan of the
// same columns. Peak RSS is reported at 100k and 1M entity rows to show it
// stays flat in data size.
func BenchmarkExportPIT(b *testing.B) {
	e := setup(b)
	e.applyRepo(b)
	e.loadPIT(b)
	base := pitBase
	entities := func(n int) string {
		path := filepath.Join(e.dir, fmt.Sprintf("entities_%d.csv", n))
		e.sqlToFile(b, fmt.Sprintf(`SELECT concat('c', toString(intHash32(number) %% 1000000)) AS customer_id,
			toInt64(intHash32(number + 7) %% 100000) + 9007199254740993 AS product_id,
			toDateTime(%d + intHash32(number + 3) %% 5000000) AS event_timestamp, number %% 2 AS label
			FROM numbers(%d) FORMAT CSVWithNames`, base, n), path)
		return path
	}
	small, large := entities(100_000), entities(1_000_000)
	features := "cust:orders,cust:spend,cust:category,cust:opt_in,prod:popularity,prod:price,cust_prod:views"
	b.ResetTimer()
	for range b.N {
		floor := timed(func() {
			e.sql(b, `SELECT customer_id, event_ts, created_ts, orders, spend, category, opt_in FROM bench.fv_cust FORMAT Null;
				SELECT product_id, event_ts, created_ts, popularity, price FROM bench.fv_prod FORMAT Null;
				SELECT customer_id, product_id, event_ts, created_ts, views FROM bench.fv_cust_prod FORMAT Null`)
		})
		rs := e.tailorRun(b, "export", "--entities", small, "--features", features, "--out", filepath.Join(e.dir, "small.parquet"))
		rl := e.tailorRun(b, "export", "--entities", large, "--features", features, "--out", filepath.Join(e.dir, "large.parquet"))
		ratio := rl.wall.Seconds() / floor.Seconds()
		b.ReportMetric(rl.wall.Seconds(), "export_1M_s")
		b.ReportMetric(floor.Seconds(), "raw_scan_10M_s")
		b.ReportMetric(ratio, "ratio_vs_floor")
		b.ReportMetric(float64(rs.peakRSS)/(1<<20), "peak_RSS_100k_MB")
		b.ReportMetric(float64(rl.peakRSS)/(1<<20), "peak_RSS_1M_MB")
		record(b, benchrec.Result{Area: "offline store", Measure: "tailor export, point in time, 1M entity rows over 3 views / 10M feature rows",
			Value: fmt.Sprintf("%.2f s; peak RSS %d MB at 100k rows, %d MB at 1M", rl.wall.Seconds(), rs.peakRSS>>20, rl.peakRSS>>20),
			Floor: fmt.Sprintf("raw ClickHouse scan of the same columns: %.2f s", floor.Seconds()), Ratio: ratioText(ratio),
			Target: "<= 4x, RSS <= 300 MB", Met: benchrec.Met(ratio <= 4 && rl.peakRSS <= 300<<20)})
		b.Logf("PIT export of 1M entity rows over 3 views / 10M rows on %s: %.2fs, raw scan %.2fs, ratio %.2fx (target <= 4x); peak RSS %d MB at 100k rows, %d MB at 1M rows (target <= 300 MB)",
			machine(), rl.wall.Seconds(), floor.Seconds(), ratio, rs.peakRSS>>20, rl.peakRSS>>20)
	}
}

// pitBase is the first event time of the point-in-time data.
const pitBase = 1_700_000_000

// loadPIT loads the 10M feature rows of the point-in-time benchmarks once
// per run: 4M customer rows over 1M customers, 2M product rows over 100k
// products, 4M customer-product rows.
func (e *env) loadPIT(b *testing.B) {
	b.Helper()
	if e.pitLoaded {
		return
	}
	base := pitBase
	e.sql(b, fmt.Sprintf(`
		TRUNCATE TABLE bench.fv_cust; TRUNCATE TABLE bench.fv_prod; TRUNCATE TABLE bench.fv_cust_prod;
		INSERT INTO bench.fv_cust (customer_id, event_ts, created_ts, orders, spend, category, opt_in)
			SELECT concat('c', toString(number %% 1000000)), toDateTime(%d + intHash32(number) %% 5000000), toDateTime(%d),
				number %% 17, number / 7, concat('cat', toString(number %% 9)), number %% 2 FROM numbers(4000000);
		INSERT INTO bench.fv_prod (product_id, event_ts, created_ts, popularity, price)
			SELECT toInt64(number %% 100000) + 9007199254740993, toDateTime(%d + intHash32(number) %% 5000000), toDateTime(%d),
				toFloat32(number %% 1000) / 1000, number / 3 FROM numbers(2000000);
		INSERT INTO bench.fv_cust_prod (customer_id, product_id, event_ts, created_ts, views)
			SELECT concat('c', toString(number %% 1000000)), toInt64(intHash32(number) %% 100000) + 9007199254740993,
				toDateTime(%d + intHash32(number + 1) %% 5000000), toDateTime(%d), number %% 13 FROM numbers(4000000);
		`, base, base, base, base, base, base))
	e.pitLoaded = true
}
