package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
)

const windowDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: orders
    entities: [customer]
    source: {table: orders, timestamp_field: ts}
    aggregations:
      - {name: orders_30d, function: count, window: 30d}
      - {name: orders_90d, function: count, window: 90d}
      - {name: spend_90d, function: sum, column: amount, window: 90d}
      - {name: email_30d, function: count, where: "channel = 'email'", window: 30d}
      - {name: last_product, function: last, column: product_id, type: string, window: 90d}
      - {name: days_since_last, function: days_since_last, window: 90d}
`

// TestWindowFeaturesOnlineAndOffline: a windowed view over an event table
// answers the same online (materialized, and read through) as the
// point-in-time export, with events placed days away from every window
// bound so the instant of each read does not matter; a customer without
// events in the longest window has no row.
func TestWindowFeaturesOnlineAndOffline(t *testing.T) {
	c := newCLI(t)
	c.exec("CREATE DATABASE IF NOT EXISTS " + c.db)
	c.exec("CREATE TABLE " + c.db + ".orders (customer_id String, product_id String, amount Float64, channel String, ts DateTime, _inserted_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (customer_id, ts)")
	now := time.Now().UTC()
	day := 24 * time.Hour
	at := func(d time.Duration) string { return now.Add(-d).Format("2006-01-02 15:04:05") }
	c.exec(fmt.Sprintf(`INSERT INTO %s.orders (customer_id, product_id, amount, channel, ts) SELECT * FROM (
		SELECT 'a', 'p1', 10.5, 'email', toDateTime('%s') UNION ALL
		SELECT 'a', 'p2', 4.5, 'sms', toDateTime('%s') UNION ALL
		SELECT 'a', 'p3', 100, 'email', toDateTime('%s') UNION ALL
		SELECT 'b', 'p9', 7, 'email', toDateTime('%s') UNION ALL
		SELECT 'c', 'p4', 1, 'email', toDateTime('%s'))`,
		c.db, at(10*day), at(50*day), at(200*day), at(60*day), at(120*day)))
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": windowDefs}))
	// a: two orders in 90 days, one of them in 30; b: one in 90; c: none.
	want := map[string]string{
		"a": "1,2,15,1,p1,10",
		"b": "0,1,7,0,p9,60",
		"c": ",,,,,",
	}
	render := func(vals []string) string { return strings.Join(vals, ",") }

	// Offline, at now.
	ents := filepath.Join(t.TempDir(), "e.csv")
	writeFile(t, ents, fmt.Sprintf("customer_id,event_timestamp\na,%s\nb,%s\nc,%s\n", now.Format(time.RFC3339), now.Format(time.RFC3339), now.Format(time.RFC3339)))
	out := filepath.Join(t.TempDir(), "x.csv")
	c.ok("export", "--entities", ents, "--features", "orders:*", "--out", out)
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, out)), "\n")[1:] {
		cells := strings.Split(line, ",")
		got := cells[2:]
		if got[5] != "" {
			got[5] = roundDays(t, got[5])
		}
		if render(got) != want[cells[0]] {
			t.Errorf("export %s: %s, want %s", cells[0], render(got), want[cells[0]])
		}
	}

	// Online: read through, then materialized.
	base, _ := startServe(t, c, "--warm-start=false", "--refresh-windows", "1s")
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	online := func(what string) {
		t.Helper()
		req := &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"orders:*"}}}}
		for _, id := range []string{"a", "b", "c"} {
			req.Entities = append(req.Entities, &featurestorev1.EntityRow{Keys: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: id}}}})
		}
		resp, err := client.GetOnlineFeatures(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"a", "b", "c"} {
			var got []string
			for j, v := range resp.Msg.GetRows()[i].GetValues() {
				s := ""
				switch x := v.GetValue().GetKind().(type) {
				case *featurestorev1.Value_Int64Value:
					s = fmt.Sprint(x.Int64Value)
				case *featurestorev1.Value_Float64Value:
					s = fmt.Sprint(x.Float64Value)
					if j == 5 {
						s = roundDays(t, s)
					}
				case *featurestorev1.Value_StringValue:
					s = x.StringValue
				}
				got = append(got, s)
			}
			if render(got) != want[id] {
				t.Errorf("%s online %s: %s, want %s", what, id, render(got), want[id])
			}
		}
	}
	online("read through")
	mustContain(t, c.ok("materialize", "--server", base), "orders: 2 keys loaded")
	online("materialized")
	// A new event reaches the held key through the server's follower.
	c.exec(fmt.Sprintf("INSERT INTO %s.orders (customer_id, product_id, amount, channel, ts) SELECT 'a', 'p7', 1, 'push', toDateTime('%s')", c.db, at(day)))
	want["a"] = "2,3,16,1,p7,1"
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.GetOnlineFeatures(context.Background(), connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"orders:orders_30d"}}},
			Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: "a"}}}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.GetRows()[0].GetValues()[0].GetValue().GetInt64Value() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after a new event, the online orders_30d of a is still %v", resp.Msg.GetRows()[0].GetValues()[0].GetValue())
		}
		time.Sleep(100 * time.Millisecond)
	}
	online("after a new event")

	// Events pushed to the windowed view are stored in its event table and
	// served by the next read, without waiting for the follower.
	str := func(x string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: x}}
	}
	push := func(rows ...*featurestorev1.PushRow) error {
		_, err := client.Push(context.Background(), connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "orders", Rows: rows}))
		return err
	}
	event := func(vals map[string]*featurestorev1.Value, ago time.Duration) *featurestorev1.PushRow {
		return &featurestorev1.PushRow{Values: vals, EventTimestamp: timestamppb.New(now.Add(-ago))}
	}
	if err := push(event(map[string]*featurestorev1.Value{"customer_id": str("b"), "product_id": str("p5"), "channel": str("email"),
		"amount": {Kind: &featurestorev1.Value_Float64Value{Float64Value: 3}}}, 2*day)); err != nil {
		t.Fatal(err)
	}
	want["b"] = "1,2,10,1,p5,2"
	online("after a push")
	for _, tc := range []struct {
		row  *featurestorev1.PushRow
		want string
	}{
		{event(map[string]*featurestorev1.Value{"product_id": str("p5")}, day), `join key "customer_id"`},
		{event(map[string]*featurestorev1.Value{"customer_id": str("b"), "colour": str("red")}, day), `no column "colour"`},
		{event(map[string]*featurestorev1.Value{"customer_id": str("b"), "amount": str("lots")}, day), `column "amount"`},
		{event(map[string]*featurestorev1.Value{"customer_id": str("b")}, -time.Hour), "ahead of the server clock"},
	} {
		if err := push(tc.row); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("push %v: %v, want InvalidArgument naming %s", tc.row.GetValues(), err, tc.want)
		}
	}
	online("after refused pushes")

	// Values age: the server recomputes the held keys every
	// --refresh-windows, so days_since_last grows without new events.
	days := func() float64 {
		resp, err := client.GetOnlineFeatures(context.Background(), connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: []string{"orders:days_since_last"}}},
			Entities: []*featurestorev1.EntityRow{{Keys: map[string]*featurestorev1.Value{"customer_id": str("c")}}, {Keys: map[string]*featurestorev1.Value{"customer_id": str("a")}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetRows()[1].GetValues()[0].GetValue().GetFloat64Value()
	}
	// Let the follower's last re-reads of the recent events pass first:
	// it would refresh the key too.
	time.Sleep(2500 * time.Millisecond)
	before := days()
	if !waitFor(5*time.Second, func() bool { return days() > before }) {
		t.Errorf("days_since_last of a stayed %v for 5s with --refresh-windows 1s", before)
	}
	// Windowed views are computed: ingest refuses them.
	mustContain(t, c.fails("ingest", "orders", ents), "aggregates the events of orders")
}

// roundDays rounds a days_since_last value to whole days.
func roundDays(t *testing.T, s string) string {
	var f float64
	if _, err := fmt.Sscan(s, &f); err != nil {
		t.Fatalf("days %q: %v", s, err)
	}
	return fmt.Sprint(int(f + 0.5))
}
