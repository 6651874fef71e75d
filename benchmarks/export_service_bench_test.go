package benchmarks

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tailorhq/tailor/benchmarks/benchrec"
)

// BenchmarkExportService exports the same point-in-time training set (1M
// entity rows over three views, the data of BenchmarkExportPIT) through a
// `tailor serve` ExportService, streamed as Arrow IPC to `tailor export
// --server`, against the floor of the direct file export in the same run.
// Issue 6's target: at least 0.8x the file export's throughput.
func BenchmarkExportService(b *testing.B) {
	e := setup(b)
	e.applyRepo(b)
	e.loadPIT(b)
	base := pitBase
	path := filepath.Join(e.dir, "service_entities.csv")
	e.sqlToFile(b, fmt.Sprintf(`SELECT concat('c', toString(intHash32(number) %% 1000000)) AS customer_id,
		toInt64(intHash32(number + 7) %% 100000) + 9007199254740993 AS product_id,
		toDateTime(%d + intHash32(number + 3) %% 5000000) AS event_timestamp, number %% 2 AS label
		FROM numbers(1000000) FORMAT CSVWithNames`, base), path)
	features := "cust:orders,cust:spend,cust:category,cust:opt_in,prod:popularity,prod:price,cust_prod:views"
	srv := startServer(b, "tailor serve", exec.Command(e.tailor, "--clickhouse", e.srv.DSN(), "--database", "bench", "serve",
		"--addr", "127.0.0.1:0", "--warm-start=false", "--follow", "1h", "--reload", "1h"))
	b.ResetTimer()
	for range b.N {
		file := e.tailorRun(b, "export", "--entities", path, "--features", features, "--out", filepath.Join(e.dir, "file.arrow"))
		over := e.tailorRun(b, "export", "--server", srv.base, "--entities", path, "--features", features, "--out", filepath.Join(e.dir, "over.arrow"))
		ratio := file.wall.Seconds() / over.wall.Seconds()
		b.ReportMetric(over.wall.Seconds(), "service_export_1M_s")
		b.ReportMetric(file.wall.Seconds(), "file_export_1M_s")
		b.ReportMetric(ratio, "throughput_ratio_vs_file")
		b.ReportMetric(float64(over.peakRSS)/(1<<20), "client_peak_RSS_MB")
		record(b, benchrec.Result{Area: "training export and scoring", Measure: "export of 1M entity rows over 3 views through the ExportService (Arrow IPC stream)",
			Value: fmt.Sprintf("%.2f s, client peak RSS %d MB", over.wall.Seconds(), over.peakRSS>>20), Floor: fmt.Sprintf("the file export: %.2f s", file.wall.Seconds()),
			Ratio: ratioText(ratio) + " throughput", Target: ">= 0.8x", Met: benchrec.Met(ratio >= 0.8)})
		b.Logf("export of 1M entity rows over 3 views on %s: over the ExportService %.2fs, file export %.2fs: throughput %.2fx the file export's (target >= 0.8x); client peak RSS %d MB",
			machine(), over.wall.Seconds(), file.wall.Seconds(), ratio, over.peakRSS>>20)
	}
}
