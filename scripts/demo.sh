#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: a private local ClickHouse, the
# example feature repo applied, history ingested, and point-in-time training
# sets exported in every format. Exits 0 only if every step worked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tailor=bin/tailor
[ -x "$tailor" ] || { echo "demo: $tailor missing: run 'make build'" >&2; exit 1; }

# A throwaway home keeps the demo's ClickHouse apart from the user's own.
export TAILOR_HOME="$(mktemp -d -t tailor-demo-XXXXXX)"
out="$TAILOR_HOME/out"
mkdir -p "$out"
cleanup() {
	"$tailor" clickhouse stop >/dev/null 2>&1 || true
	rm -rf "$TAILOR_HOME"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start a local ClickHouse under $TAILOR_HOME"
"$tailor" clickhouse start

step "plan and apply the example feature repo"
"$tailor" plan examples/feature_repo
"$tailor" apply examples/feature_repo
"$tailor" apply examples/feature_repo          # idempotent: no changes
"$tailor" views list
"$tailor" views describe customer_stats

step "ingest history (CSV with datetimes, epoch seconds and RFC3339)"
"$tailor" ingest customer_stats examples/data/customer_stats.csv
"$tailor" ingest product_stats examples/data/product_stats.csv
"$tailor" ingest customer_product examples/data/customer_product.csv

step "export a point-in-time training set in all three formats"
for fmt in parquet arrow csv; do
	"$tailor" export --entities examples/data/training_entities.csv \
		--service next_product_inputs --out "$out/train.$fmt"
done
echo "first rows of train.csv:"
head -n 6 "$out/train.csv"

step "snapshot every customer as of 2024-05-15, from a ClickHouse query"
"$tailor" export --entities-sql \
	"SELECT DISTINCT customer_id, toDateTime('2024-05-15 00:00:00') AS event_timestamp FROM tailor.fv_customer_stats ORDER BY customer_id" \
	--features 'customer_stats:*' --full-names --out "$out/snapshot.csv"
head -n 4 "$out/snapshot.csv"

step "bad input is refused with a clear error"
if "$tailor" export --entities examples/data/training_entities.csv --features customer_stats:nope --out "$out/x.csv"; then
	echo "demo: a bad feature reference was accepted" >&2
	exit 1
fi

step "stop the local ClickHouse"
"$tailor" clickhouse stop
echo
echo "demo: OK"
