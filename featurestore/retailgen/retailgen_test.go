package retailgen_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/retailgen"
)

var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

var end = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// TestWorldKeepsItsPlantedTruth draws customers and checks that their
// events carry the truth planted in them, strongly enough to learn.
func TestWorldKeepsItsPlantedTruth(t *testing.T) {
	w, err := retailgen.NewWorld(7, 200, 120, end)
	if err != nil {
		t.Fatal(err)
	}
	var orders, favourite, nearHour, views int
	var expected float64
	sends := map[bool]int{}
	opens := map[bool]int{}
	for n := range 3000 {
		cu, os, vs, ss := w.Customer(n)
		active := w.End.Sub(later(cu.SignupAt, w.Start)).Hours() / 24
		expected += active / cu.CadenceDays
		for _, o := range os {
			orders++
			if w.Products[o.Product].Category == cu.Favourite {
				favourite++
			}
			if d := o.At.Hour() - cu.Hour; d >= -3 && d <= 3 {
				nearHour++
			}
			if o.At.Before(w.Start) || !o.At.Before(w.End) || o.At.Before(cu.SignupAt) {
				t.Fatalf("customer %s: order at %s outside [%s, %s) or before signup %s", cu.ID, o.At, w.Start, w.End, cu.SignupAt)
			}
		}
		views += len(vs)
		for _, s := range ss {
			if !cu.Consent[s.Channel] {
				t.Fatalf("customer %s: a %s message without consent", cu.ID, s.Channel)
			}
			pref := s.Channel == cu.Channel
			sends[pref]++
			if s.Opened {
				opens[pref]++
				if !s.OpenedAt.After(s.At) {
					t.Fatalf("customer %s: opened at %s, sent at %s", cu.ID, s.OpenedAt, s.At)
				}
			}
		}
	}
	share := float64(favourite) / float64(orders)
	if share < 0.45 {
		t.Errorf("%.2f of orders in the favourite category; the planted taste is too weak", share)
	}
	if r := float64(nearHour) / float64(orders); r < 0.9 {
		t.Errorf("%.2f of orders within 3 hours of the customer's hour", r)
	}
	if r := float64(orders) / expected; r < 0.7 || r > 1.3 {
		t.Errorf("%d orders, cadence predicts %.0f", orders, expected)
	}
	pref, other := float64(opens[true])/float64(sends[true]), float64(opens[false])/float64(sends[false])
	if pref < 3*other {
		t.Errorf("open rate %.3f on the preferred channel, %.3f on others: not planted strongly enough", pref, other)
	}
	if views < orders {
		t.Errorf("%d views for %d orders", views, orders)
	}
	t.Logf("%d orders (%.2f in the favourite category), open rate %.3f preferred vs %.3f other, %d views", orders, share, pref, other, views)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestGenerateIsDeterministic writes the same world with one worker and
// with three into ClickHouse: every table holds the same rows.
func TestGenerateIsDeterministic(t *testing.T) {
	ctx := context.Background()
	fingerprints := map[string]string{}
	for _, workers := range []int{1, 3} {
		db := fmt.Sprintf("retail_w%d", workers)
		store, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		st, err := retailgen.Generate(ctx, store.Conn(), db, retailgen.Options{Customers: 2500, Products: 60, Days: 60, Seed: 3, End: end, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		if st.Orders == 0 || st.Views == 0 || st.Sends == 0 || st.Opens == 0 || st.Customers != 2500 || st.Products != 60 {
			t.Fatalf("stats %+v", st)
		}
		for table, cols := range map[string]string{
			"retail_products":  "product_id, category, price",
			"retail_customers": "customer_id, signup_at, favourite_category, preferred_channel, preferred_hour, cadence_days, consent_sms",
			"retail_orders":    "order_id, customer_id, product_id, amount, device, ts",
			"retail_views":     "customer_id, product_id, ts",
			"retail_sends":     "customer_id, campaign, channel, ts",
			"retail_opens":     "customer_id, campaign, clicked, device, hour, ts",
		} {
			var n uint64
			var h uint64
			if err := store.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count(), groupBitXor(cityHash64(%s)) FROM %s.%s", cols, db, table)).Scan(&n, &h); err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%d rows, %x", n, h)
			if prev, ok := fingerprints[table]; ok && prev != got {
				t.Errorf("%s: %s with 1 worker, %s with 3", table, prev, got)
			}
			fingerprints[table] = got
		}
		var orders uint64
		if err := store.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.retail_orders", db)).Scan(&orders); err != nil {
			t.Fatal(err)
		}
		if int64(orders) != st.Orders {
			t.Errorf("%d orders stored, %d reported", orders, st.Orders)
		}
		// A second run refuses to overwrite, unless told to.
		if _, err := retailgen.Generate(ctx, store.Conn(), db, retailgen.Options{Customers: 10, Products: 60, Days: 60, End: end}); err == nil {
			t.Error("generating over an existing world succeeded without Replace")
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		products, days int
		want           string
	}{{5, 30, "--products"}, {100, 3, "--days"}} {
		if _, err := retailgen.NewWorld(1, tc.products, tc.days, end); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("products %d days %d: %v, want an error naming %s", tc.products, tc.days, err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
