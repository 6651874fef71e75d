#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: the hyper-personalization loop on
# a generated retail world. A private local ClickHouse; a world of
# $DEMO_CUSTOMERS customers (default 50,000) with planted tastes; the window
# feature repo; training sets exported point in time; the next-product,
# timing and channel models trained in Go and registered; a server that
# answers NextBestAction; every customer scored in batch; and the quality
# table against the popularity baseline and the planted truth. Exits 0 only
# if every step worked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tailor=bin/tailor
[ -x "$tailor" ] || { echo "demo: $tailor missing: run 'make build'" >&2; exit 1; }
customers=${DEMO_CUSTOMERS:-50000}

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
started=$(date +%s)

step "start a local ClickHouse under $TAILOR_HOME"
"$tailor" clickhouse start
port=$("$tailor" clickhouse status | sed -n 's|.*url: *clickhouse://[^:]*:\([0-9]*\)/.*|\1|p')
sql() { clickhouse-client --port "$port" --database tailor --query "$1"; }

step "generate a retail world: $customers customers, 200 products, 180 days"
"$tailor" generate retail --customers "$customers" --products 200 --days 180 --seed 7

step "apply the window feature repo (examples/retail/features)"
"$tailor" apply examples/retail/features
"$tailor" views list

step "export the three training sets, point in time (labels: examples/retail/labels)"
# Each command's whole output goes to a file and only then is shortened:
# under pipefail, `cmd | head` would fail the demo whenever head exits
# before cmd has written everything (SIGPIPE, exit status 141).
for task in next_product timing channel; do
	"$tailor" export --entities-sql "$(cat examples/retail/labels/$task.sql)" --service "$task" \
		--out "$out/$task.parquet" >"$out/export_$task.txt"
	head -n 1 "$out/export_$task.txt" | cut -c1-120
done

step "start the server (Connect, gRPC, health, metrics) with the next-best-action config"
"$tailor" serve --addr 127.0.0.1:0 --nba examples/retail/nba.yaml >"$out/serve.out" 2>"$out/serve.log" &
serve_pid=$!
for _ in $(seq 600); do grep -q '^serving on ' "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
server="http://$(sed -n 's/^serving on //p' "$out/serve.out")"
[ "$server" != "http://" ] || { echo "demo: the server did not start:" >&2; cat "$out/serve.log" >&2; exit 1; }
echo "server at $server"

step "train, measure and register the three models (Go trainers, ONNX, lineage = the snapshot)"
for task in next-product timing channel; do
	name=${task//-/_}
	"$tailor" train "$task" --export "$out/$name.parquet" --service "$name" --server "$server" \
		--epochs 10 --learning-rate 0.01 | tee "$out/train_$name.txt"
	"$tailor" models --server "$server" alias "$name" champion 1 --reason "demo: first model"
done
"$tailor" models --server "$server" list

step "materialize the online tier"
"$tailor" materialize --server "$server"

step "next best action for a few customers"
sleep 2 # the server re-reads aliases every second
for c in c0000001 c0000002 c0000003; do
	"$tailor" nba --server "$server" --entity customer_id=$c --k 3 --format text
done

step "score every customer in batch (the answer NextBestAction gives, at one instant)"
at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"$tailor" score --next-best-action --nba examples/retail/nba.yaml --k 5 \
	--entities-sql "SELECT customer_id FROM retail_customers" --at "$at" --out "$out/nba.csv"
head -n 3 "$out/nba.csv" | cut -c1-160

step "quality"
metric() { awk -v m="$2" '$1 == m {print $3 "\t" $2}' "$out/train_$1.txt"; }
sql "CREATE TABLE nba (customer_id String, products String, product_scores String, send_at String, channel String,
	fallback String, fallback_reasons String, models String) ENGINE = Memory"
tail -n +2 "$out/nba.csv" | sql "INSERT INTO nba FORMAT CSV"
# Against the planted truth: the favourite category of the recommended
# product, the preferred channel, and (for timing) the purchase cadence.
fav=$(sql "SELECT round(avg(category = favourite_category), 3) FROM (
	SELECT customer_id, category FROM (SELECT customer_id, splitByChar(' ', products)[1] AS product_id FROM nba)
	ANY INNER JOIN (SELECT product_id, category FROM retail_products) USING product_id)
	ANY INNER JOIN (SELECT customer_id, favourite_category FROM retail_customers) USING customer_id")
fav_pop=$(sql "SELECT round(avg(favourite_category = (SELECT category FROM retail_products WHERE product_id = (
	SELECT product_id FROM retail_orders GROUP BY product_id ORDER BY count() DESC LIMIT 1))), 3) FROM retail_customers")
chan=$(sql "SELECT round(avg(channel = preferred_channel), 3) FROM nba
	ANY INNER JOIN (SELECT customer_id, preferred_channel FROM retail_customers) USING customer_id")
chan_pop=$(sql "SELECT round(max(c) / sum(c), 3) FROM (SELECT count() AS c FROM retail_customers GROUP BY preferred_channel)")
# Open-rate lift: the historical open rate of messages sent on the channel
# the answer picks for that customer, over the open rate of all messages.
lift=$(sql "SELECT round(avg(opened) / (SELECT count() FROM retail_opens) * (SELECT count() FROM retail_sends), 2) FROM (
	SELECT customer_id, channel, opened FROM (SELECT customer_id, campaign, channel, 1 AS opened FROM retail_opens)
	ANY RIGHT JOIN (SELECT customer_id, campaign, channel FROM retail_sends) USING (customer_id, campaign, channel))
	ANY INNER JOIN (SELECT customer_id, channel FROM nba) USING (customer_id, channel)")
# Send hour: the answer's send time against the planted hour, as hours
# around the clock; the baseline sends everyone at the hour most messages
# are opened at.
hour=$(sql "SELECT round(avg(least(abs(h - preferred_hour), 24 - abs(h - preferred_hour))), 2) FROM (
	SELECT customer_id, toInt16(toHour(parseDateTimeBestEffort(send_at))) AS h FROM nba)
	ANY INNER JOIN (SELECT customer_id, toInt16(preferred_hour) AS preferred_hour FROM retail_customers) USING customer_id")
hour_pop=$(sql "SELECT round(avg(least(abs(h - preferred_hour), 24 - abs(h - preferred_hour))), 2) FROM (
	SELECT toInt16(preferred_hour) AS preferred_hour, (SELECT toInt16(hour) FROM retail_opens GROUP BY hour ORDER BY count() DESC LIMIT 1) AS h FROM retail_customers)")
hit=$(metric next_product hit_at_5); mrr=$(metric next_product mrr)
mae=$(metric timing mae_days); acc=$(metric channel accuracy)
{
	printf 'measure\tpopularity\tmodel\n'
	printf 'next product hit@5 (latest 20%% of orders)\t%s\n' "$hit"
	printf 'next product MRR\t%s\n' "$mrr"
	printf 'timing: mean absolute error, days to the next order\t%s\n' "$mae"
	printf 'channel accuracy (latest 20%% of opens)\t%s\n' "$acc"
	printf 'recommended product in the planted favourite category\t%s\t%s\n' "$fav_pop" "$fav"
	printf 'channel = the planted preferred channel\t%s\t%s\n' "$chan_pop" "$chan"
	printf 'send hour: hours from the planted hour\t%s\t%s\n' "$hour_pop" "$hour"
	printf 'open rate on the chosen channel, over all messages\t1.00\t%s\n' "$lift"
} | column -t -s $'\t'
# The gate: next-product hit@5 at least twice the popularity baseline's. A
# report without both figures fails it too, rather than passing unread.
awk -v h="$hit" 'BEGIN {
	if (split(h, a, "\t") != 2 || a[1] !~ /^[0-9.]+$/ || a[2] !~ /^[0-9.]+$/) {
		print "demo: no next-product hit@5 in the training report (got \"" h "\")" > "/dev/stderr"; exit 1
	}
	if (a[2] < 2 * a[1]) { print "demo: next-product hit@5 " a[2] " is below twice the popularity baseline " a[1] > "/dev/stderr"; exit 1 }
}'

step "stop"
kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=
echo "demo finished in $(( $(date +%s) - started ))s"
