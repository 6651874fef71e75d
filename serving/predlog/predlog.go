// Package predlog is the prediction log: every answer the serving tier
// gives is recorded in ClickHouse (request id, model versions, a digest of
// the inputs, the outputs, latency) without ever slowing the request down.
//
// Record hands a record to a bounded in-memory queue and returns at once;
// when the queue is full the record is dropped and counted. One background
// writer drains the queue into batched INSERTs, retrying a failed write a
// few times before counting its records as failed. Delivery is at least
// once: a write that timed out after ClickHouse stored it is written again
// on retry, so readers that need exactness deduplicate on request_id.
package predlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// Table is the name of the prediction log table in tailor's database.
const Table = "prediction_log"

// Defaults of Options.
const (
	DefaultQueue        = 65536
	DefaultBatchRows    = 10000
	DefaultFlushEvery   = time.Second
	DefaultRetries      = 2
	DefaultBackoff      = 200 * time.Millisecond
	DefaultWriteTimeout = 30 * time.Second
)

// dropLogEvery is how often at most the writer logs that records were
// dropped.
const dropLogEvery = 10 * time.Second

// Method names of the serving RPCs a record can come from.
const (
	MethodPredict        = "Predict"
	MethodNextBestAction = "NextBestAction"
)

// ModelVersion names one model version that took part in an answer, and
// the alias it was reached through ("" when named by version).
type ModelVersion struct {
	Name    string
	Version int64
	Alias   string
}

// Record is one logged prediction. Record keeps the Models slice as given:
// callers must not modify it afterwards.
type Record struct {
	RequestID string
	// At is when the request arrived; zero means the time Record is
	// called. It is stored with microsecond precision.
	At     time.Time
	Method string // MethodPredict or MethodNextBestAction
	Models []ModelVersion
	// Entity is the entity the answer is for ("customer_id=c1"; "" when
	// none).
	Entity string
	// InputsDigest is Digest of the assembled input tensors.
	InputsDigest string
	// Outputs is the answer as JSON text.
	Outputs string
	// EncodeOutputs, when Outputs is empty, produces it on the writer's
	// goroutine, off the request path; what it reads must not change
	// after Record.
	EncodeOutputs func() string
	Latency       time.Duration
	// Fallback is set when a declared fallback answered.
	Fallback bool
	Error    string
}

// Options configure New. Zero values mean the defaults.
type Options struct {
	// Queue is how many records may wait for the writer (DefaultQueue);
	// beyond it Record drops.
	Queue int
	// BatchRows is the most records one INSERT carries (DefaultBatchRows).
	BatchRows int
	// FlushEvery bounds how long a record waits before it is written when
	// fewer than BatchRows are queued (DefaultFlushEvery).
	FlushEvery time.Duration
	// Retries is how many more times a failed INSERT is tried
	// (DefaultRetries); negative means none.
	Retries int
	// Backoff is the wait before the first retry, doubled for each next
	// one (DefaultBackoff).
	Backoff time.Duration
	// WriteTimeout bounds one INSERT attempt (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Logger receives failed writes and drops (slog.Default()).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Queue < 0 || o.BatchRows < 0 || o.FlushEvery < 0 || o.Backoff < 0 || o.WriteTimeout < 0 {
		return errors.New("predlog: negative option")
	}
	if o.Queue == 0 {
		o.Queue = DefaultQueue
	}
	if o.BatchRows == 0 {
		o.BatchRows = DefaultBatchRows
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.Backoff == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Log is an asynchronous prediction log. Its methods are safe for
// concurrent use.
type Log struct {
	opt   Options
	write func(ctx context.Context, batch []Record) error
	queue chan Record
	// kickAt is the queue length at which Record wakes the writer: a
	// batch, or half the queue when that is less.
	kickAt int

	// mu guards closed against the close of queue: Record holds it shared
	// around its non-blocking send, Close exclusively.
	mu     sync.RWMutex
	closed bool

	// base is the parent of every write; cancelled when Close's context
	// ends, so a stuck write cannot hold Close.
	base   context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the writer has exited

	// kick wakes the writer when a batch is queued; closing at Close.
	kick    chan struct{}
	closing chan struct{}

	// dropSignal wakes the drop reporter; Record sends without waiting.
	dropSignal   chan struct{}
	reporterDone chan struct{}

	written, dropped, failed, batches atomic.Uint64

	errMu   sync.Mutex
	lastErr error

	writeSeconds prometheus.Histogram
}

// New creates db.prediction_log if it is missing and starts the writer.
// conn stays owned by the caller and must outlive Close.
func New(ctx context.Context, conn driver.Conn, db string, opt Options) (*Log, error) {
	if db == "" {
		return nil, errors.New("predlog: database name is required")
	}
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	table := offline.QuoteIdent(db) + "." + offline.QuoteIdent(Table)
	if err := conn.Exec(ctx, createTableSQL(table)); err != nil {
		return nil, fmt.Errorf("predlog: create %s.%s: %w", db, Table, err)
	}
	w := &chWriter{conn: conn, insert: "INSERT INTO " + table + " (" + strings.Join(insertColumns, ", ") + ")"}
	return start(opt, w.write), nil
}

// createTableSQL is the DDL of the log table. ClickHouse 18.16 has no
// DateTime64, so the time is the second (at) plus microseconds within it
// (at_us). Monthly partitions let old logs be dropped whole.
func createTableSQL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
		at DateTime,
		at_us UInt32,
		request_id String,
		method String,
		model_names Array(String),
		model_versions Array(Int64),
		model_aliases Array(String),
		entity String,
		inputs_digest String,
		outputs String,
		latency_ns Int64,
		fallback UInt8,
		error String,
		_inserted_at DateTime DEFAULT now()
	) ENGINE = MergeTree PARTITION BY toYYYYMM(at) ORDER BY (at, request_id)`
}

// insertColumns are the columns the writer fills, in chWriter's order.
var insertColumns = []string{
	"at", "at_us", "request_id", "method", "model_names", "model_versions", "model_aliases",
	"entity", "inputs_digest", "outputs", "latency_ns", "fallback", "error",
}

// start starts the writer and the drop reporter around a batch sink; opt
// has its defaults.
func start(opt Options, write func(context.Context, []Record) error) *Log {
	l := &Log{
		opt:          opt,
		write:        write,
		queue:        make(chan Record, opt.Queue),
		kickAt:       max(1, min(opt.BatchRows, opt.Queue/2)),
		done:         make(chan struct{}),
		kick:         make(chan struct{}, 1),
		closing:      make(chan struct{}),
		dropSignal:   make(chan struct{}, 1),
		reporterDone: make(chan struct{}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tailor_prediction_log_write_seconds",
			Help:    "Duration of the INSERTs that wrote a batch of the prediction log.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
	}
	l.base, l.cancel = context.WithCancel(context.Background())
	go l.run()
	go l.reportDrops()
	return l
}

// Record queues r for writing and returns at once, without waiting for
// the writer or ClickHouse: false, counting a drop, when the queue is full
// or the log is closed. A zero r.At is set to the current time.
func (l *Log) Record(r Record) bool {
	if len(l.queue) == cap(l.queue) {
		return l.drop() // full: no need to contend for mu
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	l.mu.RLock()
	if !l.closed {
		select {
		case l.queue <- r:
			l.mu.RUnlock()
			if len(l.queue) >= l.kickAt {
				select {
				case l.kick <- struct{}{}:
				default:
				}
			}
			return true
		default:
		}
	}
	l.mu.RUnlock()
	return l.drop()
}

// drop counts a refused record and wakes the drop reporter.
func (l *Log) drop() bool {
	l.dropped.Add(1)
	select {
	case l.dropSignal <- struct{}{}:
	default:
	}
	return false
}

// Stats are the log's counters since New.
type Stats struct {
	Written uint64 // records stored in ClickHouse
	Dropped uint64 // records refused by Record (queue full or closed)
	Failed  uint64 // records whose write failed after its retries
	Batches uint64 // INSERTs that succeeded
	Queued  int    // records waiting for the writer now
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	return Stats{
		Written: l.written.Load(), Dropped: l.dropped.Load(), Failed: l.failed.Load(),
		Batches: l.batches.Load(), Queued: len(l.queue),
	}
}

// Register exports the log's metrics: records by result (written,
// dropped, failed), the queue's depth and capacity, and the duration of
// the INSERTs.
func (l *Log) Register(reg prometheus.Registerer) error {
	const records = "tailor_prediction_log_records_total"
	const recordsHelp = "Prediction log records by result: written to ClickHouse, dropped because the queue was full, failed after retries."
	counter := func(result string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: records, Help: recordsHelp, ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(v.Load()) })
	}
	collectors := []prometheus.Collector{
		counter("written", &l.written),
		counter("dropped", &l.dropped),
		counter("failed", &l.failed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tailor_prediction_log_queue_depth", Help: "Prediction log records waiting for the writer.",
		}, func() float64 { return float64(len(l.queue)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tailor_prediction_log_queue_capacity", Help: "Records the prediction log queue holds before it drops.",
		}, func() float64 { return float64(cap(l.queue)) }),
		l.writeSeconds,
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Close stops accepting records and writes what is queued. At ctx's end
// the writes in progress are abandoned and what remains counts as failed.
// It returns an error when any record failed to be written since New.
// Closing twice waits for the same end.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
		close(l.closing)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		l.cancel()
		<-l.done
	}
	l.cancel()
	<-l.reporterDone
	if n := l.failed.Load(); n > 0 {
		l.errMu.Lock()
		defer l.errMu.Unlock()
		return fmt.Errorf("predlog: %d records not written: %w", n, l.lastErr)
	}
	return nil
}

// run is the writer. It does not wait on the queue (a writer parked on
// it would make every Record pay for waking it up) but wakes every
// FlushEvery, when Record sees a batch (or half the queue) waiting, and
// at Close. It then drains the queue, writing full batches as they form,
// and the remainder when FlushEvery has passed or the log is closing:
// ClickHouse pays per INSERT, so a backlog goes out in full batches.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]Record, 0, l.opt.BatchRows)
	tick := time.NewTicker(l.opt.FlushEvery)
	defer tick.Stop()
	for {
		due := false
		select {
		case <-tick.C:
			due = true
		case <-l.kick:
		case <-l.closing:
		}
		open := true
	drain:
		for {
			select {
			case r, ok := <-l.queue:
				if !ok {
					open = false
					break drain
				}
				batch = append(batch, r)
				if len(batch) == l.opt.BatchRows {
					l.flush(batch)
					batch = batch[:0]
				}
			default:
				break drain
			}
		}
		if due || !open {
			l.flush(batch)
			batch = batch[:0]
		}
		if !open {
			return
		}
	}
}

// reportDrops logs drops as they begin, then at most once per
// dropLogEvery while they go on, and what is left unreported when the
// writer is done. It runs apart from the writer, which may be stuck in an
// INSERT exactly when the queue fills.
func (l *Log) reportDrops() {
	defer close(l.reporterDone)
	var reported uint64
	report := func() {
		if d := l.dropped.Load(); d > reported {
			l.opt.Logger.Warn("prediction log records dropped: queue full or log closed", "dropped", d-reported, "dropped_total", d, "queue", cap(l.queue))
			reported = d
		}
	}
	defer report()
	for {
		select {
		case <-l.dropSignal:
		case <-l.done:
			return
		}
		report()
		t := time.NewTimer(dropLogEvery)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return
		}
	}
}

// flush writes batch, retrying with backoff; after the last attempt its
// records count as failed.
func (l *Log) flush(batch []Record) {
	if len(batch) == 0 {
		return
	}
	backoff := l.opt.Backoff
	var err error
	for attempt := 0; attempt <= l.opt.Retries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.base.Done():
				t.Stop()
			}
			backoff *= 2
		}
		if l.base.Err() != nil {
			err = fmt.Errorf("closing: %w", l.base.Err())
			break
		}
		began := time.Now()
		ctx, cancel := context.WithTimeout(l.base, l.opt.WriteTimeout)
		err = l.write(ctx, batch)
		cancel()
		if err == nil {
			l.writeSeconds.Observe(time.Since(began).Seconds())
			l.written.Add(uint64(len(batch)))
			l.batches.Add(1)
			return
		}
		if attempt < l.opt.Retries {
			l.opt.Logger.Debug("prediction log write failed, retrying", "records", len(batch), "attempt", attempt+1, "err", err)
		}
	}
	l.failed.Add(uint64(len(batch)))
	l.errMu.Lock()
	l.lastErr = err
	l.errMu.Unlock()
	l.opt.Logger.Error("prediction log write failed, records lost", "records", len(batch), "attempts", l.opt.Retries+1, "err", err)
}

// quoteIdent quotes a ClickHouse identifier.
