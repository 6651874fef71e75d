package predlog

import "context"

// NewDiscard returns a log whose writer accepts every batch and stores
// nothing: Record's own cost, for benchmarks.
func NewDiscard(opt Options) (*Log, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	return start(opt, func(context.Context, []Record) error { return nil }), nil
}

// NewStuck returns a log whose writer blocks in its first write until
// Close gives up: a queue that fills and stays full.
func NewStuck(opt Options) (*Log, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	return start(opt, func(ctx context.Context, _ []Record) error { <-ctx.Done(); return ctx.Err() }), nil
}

// Drain takes every queued record out of the queue, as the writer would.
func (l *Log) Drain() {
	for len(l.queue) > 0 {
		<-l.queue
	}
}
