// Package retailgen generates a synthetic retail world with known answers:
// customers whose tastes, favourite channel, opening hours, purchase
// cadence and consents are planted, and the raw events those tastes
// produce (orders, product views, campaign sends and opens) written into
// ClickHouse. Models trained on the events can then be judged against the
// planted truth as well as against a popularity baseline.
//
// Generation is deterministic: every customer draws from a random source
// seeded by (seed, customer number), so the same options give the same
// rows whatever the number of workers.
package retailgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Channels are the channels campaigns are sent through.
var Channels = []string{"email", "sms", "push", "app"}

// Devices are the devices events come from.
var Devices = []string{"ios", "android", "web"}

// Product is one item of the catalogue.
type Product struct {
	ID       string
	Category int
	Price    float64
	// Popularity is the product's weight within its category.
	Popularity float64
}

// Customer is one customer and the truth planted in them.
type Customer struct {
	ID       string
	SignupAt time.Time
	// Affinity is the share of the customer's purchases per category.
	Affinity []float64
	// Favourite is the category of largest affinity.
	Favourite int
	// Staples are products the customer buys again and again.
	Staples []int
	// Channel is the channel the customer opens; Hour the hour of day
	// (UTC) they shop and read messages at.
	Channel string
	Hour    int
	// CadenceDays is the mean time between two orders.
	CadenceDays float64
	// Consent says which channels may be used.
	Consent map[string]bool
	Device  string
}

// Order is one purchase.
type Order struct {
	ID       uint64
	Product  int
	Quantity int
	Amount   float64
	Device   string
	At       time.Time
}

// View is one product page view.
type View struct {
	Product int
	Device  string
	At      time.Time
}

// Send is one campaign message, and whether and when it was opened.
type Send struct {
	Campaign string
	Channel  string
	At       time.Time
	Opened   bool
	OpenedAt time.Time
	// Device is the device it was opened on.
	Device  string
	Clicked bool
}

// World is the shared part of a generated world: the catalogue and the
// period the events fall in.
type World struct {
	Seed       uint64
	Start, End time.Time
	Categories int
	Products   []Product
	// byCategory lists product indexes per category, with their
	// cumulative popularity for sampling.
	byCategory [][]int
	cumPop     [][]float64
}

// Category names category c.
func Category(c int) string { return fmt.Sprintf("cat%02d", c) }

// NewWorld makes the catalogue of products for seed, over the days before
// end.
func NewWorld(seed uint64, products, days int, end time.Time) (*World, error) {
	if products < 10 {
		return nil, fmt.Errorf("--products %d: at least 10", products)
	}
	if days < 7 {
		return nil, fmt.Errorf("--days %d: at least 7", days)
	}
	w := &World{Seed: seed, End: end.UTC(), Start: end.UTC().AddDate(0, 0, -days), Categories: min(12, products/5)}
	rng := rand.New(rand.NewPCG(seed, math.MaxUint64))
	w.byCategory = make([][]int, w.Categories)
	for i := range products {
		c := i % w.Categories
		rank := len(w.byCategory[c])
		w.Products = append(w.Products, Product{
			ID: fmt.Sprintf("p%04d", i), Category: c,
			Price:      math.Round(math.Exp(2.5+0.7*rng.NormFloat64())*100) / 100,
			Popularity: 1 / math.Pow(float64(rank+1), 0.9),
		})
		w.byCategory[c] = append(w.byCategory[c], i)
	}
	w.cumPop = make([][]float64, w.Categories)
	for c, idx := range w.byCategory {
		sum := 0.0
		for _, i := range idx {
			sum += w.Products[i].Popularity
			w.cumPop[c] = append(w.cumPop[c], sum)
		}
	}
	return w, nil
}

// customerRand is customer n's own random source.
func (w *World) customerRand(n int) *rand.Rand { return rand.New(rand.NewPCG(w.Seed, uint64(n))) }

// pick draws an index from cumulative weights.
func pick(rng *rand.Rand, cum []float64) int {
	x := rng.Float64() * cum[len(cum)-1]
	lo, hi := 0, len(cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if cum[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// productIn draws a product of category c by popularity.
func (w *World) productIn(rng *rand.Rand, c int) int {
	return w.byCategory[c][pick(rng, w.cumPop[c])]
}

// Customer generates customer n: the planted truth, then every event of
// the period, each kind in time order.
func (w *World) Customer(n int) (Customer, []Order, []View, []Send) {
	rng := w.customerRand(n)
	cu := Customer{ID: fmt.Sprintf("c%07d", n), Consent: map[string]bool{}}
	period := w.End.Sub(w.Start)
	// A third signed up before the period; the rest during its first half.
	if rng.IntN(3) == 0 {
		cu.SignupAt = w.Start.Add(-time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
	} else {
		cu.SignupAt = w.Start.Add(time.Duration(rng.Int64N(int64(period / 2))))
	}
	cu.SignupAt = cu.SignupAt.Truncate(time.Second)

	// Tastes: one to three favourite categories hold most of the weight.
	cu.Affinity = make([]float64, w.Categories)
	for c := range cu.Affinity {
		cu.Affinity[c] = 0.05 * rng.Float64()
	}
	for k := range 1 + rng.IntN(3) {
		cu.Affinity[rng.IntN(w.Categories)] += 1 / float64(k+1) * (0.6 + rng.Float64())
	}
	cumAff := make([]float64, w.Categories)
	sum := 0.0
	for c, a := range cu.Affinity {
		sum += a
		cumAff[c] = sum
	}
	for c := range cu.Affinity {
		cu.Affinity[c] /= sum
		if cu.Affinity[c] > cu.Affinity[cu.Favourite] {
			cu.Favourite = c
		}
	}
	for range 2 + rng.IntN(3) {
		cu.Staples = append(cu.Staples, w.productIn(rng, pick(rng, cumAff)))
	}

	cu.Channel = Channels[pick(rng, []float64{0.4, 0.55, 0.75, 1})]
	if rng.IntN(2) == 0 {
		cu.Hour = 7 + rng.IntN(3) // mornings
	} else {
		cu.Hour = 18 + rng.IntN(5) // evenings
	}
	cu.CadenceDays = math.Min(90, math.Max(2, math.Exp(math.Log(14)+0.7*rng.NormFloat64())))
	for _, ch := range Channels {
		p := 0.6
		if ch == cu.Channel {
			p = 0.95
		}
		cu.Consent[ch] = rng.Float64() < p
	}
	cu.Device = Devices[pick(rng, []float64{0.45, 0.85, 1})]

	at := func(day time.Time, hour int) time.Time {
		h := (hour + 24) % 24
		return day.Truncate(24 * time.Hour).Add(time.Duration(h)*time.Hour + time.Duration(rng.IntN(3600))*time.Second)
	}
	near := func(hour int) int { return hour + rng.IntN(5) - 2 }
	device := func() string {
		if rng.IntN(5) == 0 {
			return Devices[rng.IntN(len(Devices))]
		}
		return cu.Device
	}

	// Orders: a renewal process at the customer's cadence.
	var orders []Order
	var views []View
	from := cu.SignupAt
	if from.Before(w.Start) {
		from = w.Start.Add(-time.Duration(rng.Float64() * cu.CadenceDays * float64(24*time.Hour)))
	}
	for t := from; ; {
		gap := cu.CadenceDays * (0.5 + rng.ExpFloat64()*0.5)
		t = t.Add(time.Duration(gap * float64(24*time.Hour)))
		if !t.Before(w.End) {
			break
		}
		if t.Before(w.Start) {
			continue
		}
		ts := at(t, near(cu.Hour))
		if !ts.Before(w.End) || ts.Before(w.Start) {
			continue
		}
		var p int
		if rng.Float64() < 0.35 {
			p = cu.Staples[rng.IntN(len(cu.Staples))]
		} else {
			p = w.productIn(rng, pick(rng, cumAff))
		}
		q := 1 + rng.IntN(3)
		orders = append(orders, Order{ID: uint64(n)<<24 | uint64(len(orders)), Product: p, Quantity: q,
			Amount: math.Round(w.Products[p].Price*float64(q)*100) / 100, Device: device(), At: ts})
		// Views before the purchase: the product itself, sometimes others
		// of its category.
		for k := range rng.IntN(4) {
			vp := p
			if k > 0 && rng.IntN(2) == 0 {
				vp = w.productIn(rng, w.Products[p].Category)
			}
			vt := ts.Add(-time.Duration(1+rng.Int64N(int64(48*time.Hour/time.Second))) * time.Second)
			if !vt.Before(w.Start) {
				views = append(views, View{Product: vp, Device: device(), At: vt})
			}
		}
	}
	// Browsing: views by taste, about one every ten days.
	for range poisson(rng, period.Hours()/24/10) {
		vt := at(w.Start.Add(time.Duration(rng.Int64N(int64(period)))), near(cu.Hour))
		if vt.Before(w.End) && !vt.Before(cu.SignupAt) {
			views = append(views, View{Product: w.productIn(rng, pick(rng, cumAff)), Device: device(), At: vt})
		}
	}
	sortByTime(views, func(v View) time.Time { return v.At })

	// Campaigns: every week one or two messages on consented channels at
	// a random hour; the customer opens their own channel far more often,
	// and more often still when it arrives near their hour.
	var sends []Send
	var consented []string
	for _, ch := range Channels {
		if cu.Consent[ch] {
			consented = append(consented, ch)
		}
	}
	for week := 0; len(consented) > 0; week++ {
		day := w.Start.AddDate(0, 0, 7*week+rng.IntN(7))
		if !day.Before(w.End) {
			break
		}
		if day.Before(cu.SignupAt) {
			continue
		}
		for range 1 + rng.IntN(2) {
			ch := consented[rng.IntN(len(consented))]
			ts := at(day, 8+rng.IntN(13))
			if !ts.Before(w.End) {
				continue
			}
			s := Send{Campaign: fmt.Sprintf("wk%03d-%s", week, ch), Channel: ch, At: ts}
			p := 0.06
			if ch == cu.Channel {
				p = 0.45
			}
			if d := math.Abs(float64(ts.Hour() - cu.Hour)); d <= 2 || d >= 22 {
				p *= 1.6
			}
			if rng.Float64() < p {
				s.Opened = true
				// Opened at the customer's hour when it comes within a
				// day, otherwise soon after it arrives.
				open := at(ts, near(cu.Hour))
				if !open.After(ts) {
					open = open.Add(24 * time.Hour)
				}
				if rng.IntN(3) == 0 {
					open = ts.Add(time.Duration(1+rng.IntN(90)) * time.Minute)
				}
				s.OpenedAt = open
				s.Device = device()
				s.Clicked = rng.Float64() < 0.3
			}
			sends = append(sends, s)
		}
	}
	sortByTime(sends, func(s Send) time.Time { return s.At })
	return cu, orders, views, sends
}

// poisson draws a Poisson count of mean lambda.
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// sortByTime sorts events by time, keeping the order of equal times.
func sortByTime[T any](xs []T, at func(T) time.Time) {
	slices.SortStableFunc(xs, func(a, b T) int { return at(a).Compare(at(b)) })
}
