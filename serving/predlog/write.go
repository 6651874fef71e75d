package predlog

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// chWriter writes batches into the log table column by column. Only the
// writer goroutine uses it, so its buffers are reused from batch to batch.
type chWriter struct {
	conn   driver.Conn
	insert string

	at        []time.Time
	atUS      []uint32
	requestID []string
	method    []string
	names     [][]string
	versions  [][]int64
	aliases   [][]string
	entity    []string
	digest    []string
	outputs   []string
	latency   []int64
	fallback  []uint8
	errs      []string
}

func (w *chWriter) write(ctx context.Context, batch []Record) (err error) {
	w.fill(batch)
	b, err := w.conn.PrepareBatch(ctx, w.insert)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer b.Close()
	cols := []any{
		w.at, w.atUS, w.requestID, w.method, w.names, w.versions, w.aliases,
		w.entity, w.digest, w.outputs, w.latency, w.fallback, w.errs,
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			return fmt.Errorf("column %s: %w", insertColumns[i], err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d records: %w", len(batch), err)
	}
	return nil
}

// fill turns the batch into columns, reusing the inner model slices.
func (w *chWriter) fill(batch []Record) {
	n := len(batch)
	w.at, w.atUS = resize(w.at, n), resize(w.atUS, n)
	w.requestID, w.method, w.entity = resize(w.requestID, n), resize(w.method, n), resize(w.entity, n)
	w.digest, w.outputs, w.errs = resize(w.digest, n), resize(w.outputs, n), resize(w.errs, n)
	w.names, w.versions, w.aliases = resize(w.names, n), resize(w.versions, n), resize(w.aliases, n)
	w.latency, w.fallback = resize(w.latency, n), resize(w.fallback, n)
	for i := range batch {
		r := &batch[i]
		at := r.At.UTC()
		w.at[i] = at.Truncate(time.Second)
		w.atUS[i] = uint32(at.Nanosecond() / 1000)
		w.requestID[i], w.method[i], w.entity[i] = r.RequestID, r.Method, r.Entity
		w.digest[i], w.outputs[i], w.errs[i] = r.InputsDigest, r.Outputs, r.Error
		if r.Outputs == "" && r.EncodeOutputs != nil {
			w.outputs[i] = r.EncodeOutputs()
		}
		w.latency[i] = int64(r.Latency)
		w.fallback[i] = 0
		if r.Fallback {
			w.fallback[i] = 1
		}
		names, versions, aliases := w.names[i][:0], w.versions[i][:0], w.aliases[i][:0]
		for _, m := range r.Models {
			names, versions, aliases = append(names, m.Name), append(versions, m.Version), append(aliases, m.Alias)
		}
		w.names[i], w.versions[i], w.aliases[i] = names, versions, aliases
	}
}

// resize returns s with length n, keeping its elements (and their
// capacity) when it can.
func resize[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return append(s[:cap(s)], make([]T, n-cap(s))...)
}
