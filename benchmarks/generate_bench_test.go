package benchmarks

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

// BenchmarkGenerateRetail generates a world of 1M customers with `tailor
// generate retail` (issue 7: "1M customers in minutes"), against the floor
// of ClickHouse storing the same number of rows it generates itself
// (INSERT ... SELECT from numbers) in the same run.
func BenchmarkGenerateRetail(b *testing.B) {
	e := setup(b)
	const customers = 1_000_000
	b.ResetTimer()
	for range b.N {
		r := e.tailorRun(b, "generate", "retail", "--customers", strconv.Itoa(customers), "--days", "180", "--seed", "1", "--replace")
		m := regexp.MustCompile(`(\d+) orders, (\d+) views, (\d+) sends, (\d+) opens`).FindStringSubmatch(r.out)
		if m == nil {
			b.Fatalf("tailor generate said: %s", r.out)
		}
		rows := 0
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			rows += n
		}
		e.sql(b, "DROP TABLE IF EXISTS bench.floor_events; CREATE TABLE bench.floor_events (customer_id String, product_id String, ts DateTime, amount Float64) ENGINE = MergeTree ORDER BY (customer_id, ts)")
		floor := timed(func() {
			e.sql(b, fmt.Sprintf(`INSERT INTO bench.floor_events SELECT concat('c', toString(number %% %d)), concat('p', toString(number %% 200)),
				toDateTime(1700000000 + number %% 15552000), number / 7 FROM numbers(%d)`, customers, rows))
		})
		rate, floorRate := float64(rows)/r.wall.Seconds(), float64(rows)/floor.Seconds()
		b.ReportMetric(r.wall.Seconds(), "generate_s")
		b.ReportMetric(rate, "rows/s")
		b.ReportMetric(floorRate, "clickhouse_insert_select_rows/s")
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak_RSS_MB")
		record(b, benchrec.Result{Area: "retail world", Measure: fmt.Sprintf("tailor generate retail, %d customers, 180 days (%d event rows)", customers, rows),
			Value: fmt.Sprintf("%.0f s = %.0f rows/s, peak RSS %d MB", r.wall.Seconds(), rate, r.peakRSS>>20),
			Floor: fmt.Sprintf("ClickHouse INSERT ... SELECT of as many rows: %.0f rows/s", floorRate), Ratio: ratioText(rate / floorRate),
			Target: "minutes", Met: benchrec.Met(r.wall.Minutes() <= 5)})
		b.Logf("generate %d customers on %s: %.1fs for %d rows (%.0f rows/s), peak RSS %d MB; ClickHouse INSERT SELECT of as many rows %.0f rows/s (ratio %.2fx)",
			customers, machine(), r.wall.Seconds(), rows, rate, r.peakRSS>>20, floorRate, rate/floorRate)
	}
}
