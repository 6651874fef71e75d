package retailgen

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// Options sizes a generated world.
type Options struct {
	Customers, Products, Days int
	Seed                      uint64
	// End is the end of the period (exclusive); zero means today, 00:00
	// UTC, so a world generated today reaches up to now.
	End time.Time
	// Workers generate and insert customers in parallel (default: the
	// number of CPUs).
	Workers int
	// Replace drops the world's tables if they exist; without it an
	// existing world is an error.
	Replace bool
	// Progress, when set, is told the customers and rows done so far.
	Progress func(customers, rows int64)
}

// Stats says what was generated.
type Stats struct {
	Customers, Products, Orders, Views, Sends, Opens int64
	Start, End                                       time.Time
	Duration                                         time.Duration
}

// Rows is every event row written.
func (s Stats) Rows() int64 { return s.Orders + s.Views + s.Sends + s.Opens }

// Tables are the tables a world is written to, with their columns. Each
// carries _inserted_at, the insertion time tailor's snapshots and
// incremental materialization read.
var Tables = []struct{ Name, Columns, OrderBy string }{
	{"retail_products", "product_id String, category String, price Float64, popularity Float64", "product_id"},
	{"retail_customers", "customer_id String, signup_at DateTime, favourite_category String, affinity Array(Float64), " +
		"preferred_channel String, preferred_hour UInt8, cadence_days Float64, consent_email UInt8, consent_sms UInt8, " +
		"consent_push UInt8, consent_app UInt8, device String", "customer_id"},
	{"retail_orders", "order_id UInt64, customer_id String, product_id String, category String, quantity UInt32, amount Float64, device String, ts DateTime", "(customer_id, ts)"},
	{"retail_views", "customer_id String, product_id String, category String, device String, ts DateTime", "(customer_id, ts)"},
	{"retail_sends", "customer_id String, campaign String, channel String, ts DateTime", "(customer_id, ts)"},
	{"retail_opens", "customer_id String, campaign String, channel String, sent_at DateTime, clicked UInt8, device String, hour UInt8, ts DateTime", "(customer_id, ts)"},
}

// Generate writes a world into database db: the catalogue, the customers
// with their planted truth, and their events.
func Generate(ctx context.Context, conn driver.Conn, db string, opt Options) (Stats, error) {
	start := time.Now()
	if opt.Customers < 1 {
		return Stats{}, fmt.Errorf("--customers %d: at least 1", opt.Customers)
	}
	if opt.End.IsZero() {
		opt.End = time.Now().UTC().Truncate(24 * time.Hour)
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	w, err := NewWorld(opt.Seed, opt.Products, opt.Days, opt.End)
	if err != nil {
		return Stats{}, err
	}
	if err := createTables(ctx, conn, db, opt.Replace); err != nil {
		return Stats{}, err
	}
	st := Stats{Customers: int64(opt.Customers), Products: int64(len(w.Products)), Start: w.Start, End: w.End}
	if err := writeProducts(ctx, conn, db, w); err != nil {
		return Stats{}, err
	}

	// Workers take blocks of customers; each customer's events depend on
	// its number only, so the rows do not depend on the schedule.
	const block = 1000
	var next, done, rows atomic.Int64
	var orders, views, sends, opens atomic.Int64
	errs := make(chan error, opt.Workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := newBatches(conn, db)
			for ctx.Err() == nil {
				lo := int(next.Add(block) - block)
				if lo >= opt.Customers {
					break
				}
				hi := min(lo+block, opt.Customers)
				for n := lo; n < hi; n++ {
					cu, o, v, s := w.Customer(n)
					b.add(w, cu, o, v, s)
				}
				if b.size() >= 200_000 || hi == opt.Customers {
					if err := b.flush(ctx); err != nil {
						errs <- err
						cancel()
						return
					}
				}
				orders.Add(b.counts[0])
				views.Add(b.counts[1])
				sends.Add(b.counts[2])
				opens.Add(b.counts[3])
				rows.Add(b.counts[0] + b.counts[1] + b.counts[2] + b.counts[3])
				b.counts = [4]int64{}
				d := done.Add(int64(hi - lo))
				if opt.Progress != nil {
					opt.Progress(d, rows.Load())
				}
			}
			if err := b.flush(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return Stats{}, err
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	st.Orders, st.Views, st.Sends, st.Opens = orders.Load(), views.Load(), sends.Load(), opens.Load()
	st.Duration = time.Since(start)
	return st, nil
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

func createTables(ctx context.Context, conn driver.Conn, db string, replace bool) error {
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+offline.QuoteIdent(db)); err != nil {
		return err
	}
	for _, t := range Tables {
		ref := offline.QuoteIdent(db) + "." + offline.QuoteIdent(t.Name)
		if replace {
			if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+ref); err != nil {
				return err
			}
		}
		var exists uint8
		if err := conn.QueryRow(ctx, "EXISTS TABLE "+ref).Scan(&exists); err != nil {
			return err
		}
		if exists == 1 {
			return fmt.Errorf("table %s.%s exists already: a world is there (pass --replace to generate it again)", db, t.Name)
		}
		q := fmt.Sprintf("CREATE TABLE %s (%s, _inserted_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY %s", ref, t.Columns, t.OrderBy)
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("create %s: %w", t.Name, err)
		}
	}
	return nil
}

func writeProducts(ctx context.Context, conn driver.Conn, db string, w *World) error {
	b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.retail_products (product_id, category, price, popularity)", offline.QuoteIdent(db)))
	if err != nil {
		return err
	}
	for _, p := range w.Products {
		if err := b.Append(p.ID, Category(p.Category), p.Price, p.Popularity); err != nil {
			b.Abort()
			return err
		}
	}
	return b.Send()
}

// batches accumulates one worker's rows column by column.
type batches struct {
	conn   driver.Conn
	db     string
	counts [4]int64 // orders, views, sends, opens since the last report

	customers customerCols
	orders    orderCols
	views     viewCols
	sends     sendCols
	opens     openCols
}

type customerCols struct {
	id, fav, channel, device []string
	signup                   []time.Time
	affinity                 [][]float64
	hour                     []uint8
	cadence                  []float64
	consent                  [4][]uint8
}

type orderCols struct {
	id                          []uint64
	customer, product, cat, dev []string
	qty                         []uint32
	amount                      []float64
	ts                          []time.Time
}

type viewCols struct {
	customer, product, cat, dev []string
	ts                          []time.Time
}

type sendCols struct {
	customer, campaign, channel []string
	ts                          []time.Time
}

type openCols struct {
	customer, campaign, channel, dev []string
	sent, ts                         []time.Time
	clicked, hour                    []uint8
}

func newBatches(conn driver.Conn, db string) *batches { return &batches{conn: conn, db: db} }

func (b *batches) size() int {
	return len(b.orders.id) + len(b.views.ts) + len(b.sends.ts) + len(b.opens.ts)
}

func (b *batches) add(w *World, cu Customer, orders []Order, views []View, sends []Send) {
	c := &b.customers
	c.id, c.fav, c.channel, c.device = append(c.id, cu.ID), append(c.fav, Category(cu.Favourite)), append(c.channel, cu.Channel), append(c.device, cu.Device)
	c.signup, c.affinity, c.hour, c.cadence = append(c.signup, cu.SignupAt), append(c.affinity, cu.Affinity), append(c.hour, uint8(cu.Hour)), append(c.cadence, cu.CadenceDays)
	for i, ch := range Channels {
		var v uint8
		if cu.Consent[ch] {
			v = 1
		}
		c.consent[i] = append(c.consent[i], v)
	}
	o := &b.orders
	for _, x := range orders {
		p := w.Products[x.Product]
		o.id, o.customer, o.product, o.cat, o.dev = append(o.id, x.ID), append(o.customer, cu.ID), append(o.product, p.ID), append(o.cat, Category(p.Category)), append(o.dev, x.Device)
		o.qty, o.amount, o.ts = append(o.qty, uint32(x.Quantity)), append(o.amount, x.Amount), append(o.ts, x.At)
	}
	v := &b.views
	for _, x := range views {
		p := w.Products[x.Product]
		v.customer, v.product, v.cat, v.dev, v.ts = append(v.customer, cu.ID), append(v.product, p.ID), append(v.cat, Category(p.Category)), append(v.dev, x.Device), append(v.ts, x.At)
	}
	s, op := &b.sends, &b.opens
	for _, x := range sends {
		s.customer, s.campaign, s.channel, s.ts = append(s.customer, cu.ID), append(s.campaign, x.Campaign), append(s.channel, x.Channel), append(s.ts, x.At)
		if x.Opened {
			var clicked uint8
			if x.Clicked {
				clicked = 1
			}
			op.customer, op.campaign, op.channel = append(op.customer, cu.ID), append(op.campaign, x.Campaign), append(op.channel, x.Channel)
			op.sent, op.ts, op.clicked = append(op.sent, x.At), append(op.ts, x.OpenedAt), append(op.clicked, clicked)
			op.hour, op.dev = append(op.hour, uint8(x.OpenedAt.UTC().Hour())), append(op.dev, x.Device)
			b.counts[3]++
		}
	}
	b.counts[0] += int64(len(orders))
	b.counts[1] += int64(len(views))
	b.counts[2] += int64(len(sends))
}

// flush inserts what is buffered, one batch per table, and empties it.
func (b *batches) flush(ctx context.Context) error {
	c, o, v, s, op := &b.customers, &b.orders, &b.views, &b.sends, &b.opens
	inserts := []struct {
		table, cols string
		rows        int
		values      []any
	}{
		{"retail_customers", "customer_id, signup_at, favourite_category, affinity, preferred_channel, preferred_hour, cadence_days, consent_email, consent_sms, consent_push, consent_app, device",
			len(c.id), []any{c.id, c.signup, c.fav, c.affinity, c.channel, c.hour, c.cadence, c.consent[0], c.consent[1], c.consent[2], c.consent[3], c.device}},
		{"retail_orders", "order_id, customer_id, product_id, category, quantity, amount, device, ts", len(o.id), []any{o.id, o.customer, o.product, o.cat, o.qty, o.amount, o.dev, o.ts}},
		{"retail_views", "customer_id, product_id, category, device, ts", len(v.ts), []any{v.customer, v.product, v.cat, v.dev, v.ts}},
		{"retail_sends", "customer_id, campaign, channel, ts", len(s.ts), []any{s.customer, s.campaign, s.channel, s.ts}},
		{"retail_opens", "customer_id, campaign, channel, sent_at, clicked, device, hour, ts", len(op.ts), []any{op.customer, op.campaign, op.channel, op.sent, op.clicked, op.dev, op.hour, op.ts}},
	}
	for _, in := range inserts {
		if in.rows == 0 {
			continue
		}
		batch, err := b.conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (%s)", offline.QuoteIdent(b.db), in.table, in.cols))
		if err != nil {
			return fmt.Errorf("insert into %s: %w", in.table, err)
		}
		for i, col := range in.values {
			if err := batch.Column(i).Append(col); err != nil {
				batch.Abort()
				return fmt.Errorf("insert into %s: %w", in.table, err)
			}
		}
		if err := batch.Send(); err != nil {
			return fmt.Errorf("insert into %s: %w", in.table, err)
		}
	}
	// The driver has copied the values: start the next batch afresh.
	b.customers, b.orders, b.views, b.sends, b.opens = customerCols{}, orderCols{}, viewCols{}, sendCols{}, openCols{}
	return nil
}
