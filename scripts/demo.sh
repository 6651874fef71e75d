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
serve_pid=
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
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

step "serve online features: warm start, materialize, get, push"
"$tailor" serve --addr 127.0.0.1:0 >"$out/serve.out" 2>"$out/serve.log" &
serve_pid=$!
for _ in $(seq 300); do grep -q '^serving on ' "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
server="http://$(sed -n 's/^serving on //p' "$out/serve.out")"
echo "server at $server"
"$tailor" materialize --server "$server"
# The history is from 2024: customer_stats' ttl has passed, so its values
# come back OUTSIDE_MAX_AGE; product_stats has no ttl.
"$tailor" features get --server "$server" --service next_product_inputs \
	--entity customer_id=c003,product_id=9007199254741011
echo "a fresh event for c003, pushed (stored in ClickHouse before the answer):"
printf 'customer_id,event_ts,orders_7d,spend_30d,favourite_category,email_opt_in\nc003,%s,9,999.5,garden,true\n' \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$out/push.csv"
"$tailor" push customer_stats "$out/push.csv" --server "$server"
answer=$("$tailor" features get --server "$server" --features customer_stats:orders_7d,customer_stats:favourite_category \
	--entity customer_id=c003)
echo "$answer"
grep -q '"garden"' <<<"$answer" || { echo "demo: the pushed row is not served" >&2; exit 1; }
kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=

step "stop the local ClickHouse"
"$tailor" clickhouse stop
echo
echo "demo: OK"
