package offline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// retryingConn is the store's connection pool with two repairs the driver
// lacks:
//
//   - A statement that fails because its pooled connection was broken (the
//     server restarted, or the driver closed the socket under it) is run
//     again on a fresh connection when running it twice cannot change the
//     answer: every read, and DDL that says IF [NOT] EXISTS. Nothing else is
//     retried here; inserts that must survive a broken connection check
//     what was stored before trying again (see insertOnce).
//   - A batch insert runs under a context that can end only while the
//     insert is in flight. The driver closes a batch's socket when its
//     context ends, and a caller's context that ends just after the insert
//     returned (a request handler's, cancelled as it answers) would close
//     a socket already back in the pool, failing whoever takes it next
//     with "use of closed network connection".
type retryingConn struct {
	driver.Conn
	log     *slog.Logger
	retries atomic.Uint64
}

// retryDelays are the pauses before each retry of a statement whose
// connection broke: short, because a fresh connection either works at
// once or the server is down and the caller should hear so.
var retryDelays = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond}

// retry runs op until it succeeds, fails with an error that is not a
// broken connection, ctx ends, or the retries are spent.
func (c *retryingConn) retry(ctx context.Context, what string, op func() error) error {
	err := op()
	for _, d := range retryDelays {
		if err == nil || !IsConnectionError(err) || ctx.Err() != nil {
			return err
		}
		c.retries.Add(1)
		c.log.Debug("clickhouse connection broke; retrying", "statement", what, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		err = op()
	}
	return err
}

// Query runs a read, again on a fresh connection if the first broke
// before any row arrived.
func (c *retryingConn) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	var rows driver.Rows
	err := c.retry(ctx, firstWord(query), func() error {
		var err error
		rows, err = c.Conn.Query(ctx, query, args...)
		return err
	})
	return rows, err
}

// QueryRow runs a one-row read, retried like Query.
func (c *retryingConn) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	var row driver.Row
	_ = c.retry(ctx, firstWord(query), func() error {
		row = c.Conn.QueryRow(ctx, query, args...)
		return row.Err()
	})
	return row
}

// Select runs a read into dest, retried like Query.
func (c *retryingConn) Select(ctx context.Context, dest any, query string, args ...any) error {
	return c.retry(ctx, firstWord(query), func() error { return c.Conn.Select(ctx, dest, query, args...) })
}

// Ping checks the server, retried like a read.
func (c *retryingConn) Ping(ctx context.Context) error {
	return c.retry(ctx, "ping", func() error { return c.Conn.Ping(ctx) })
}

// Exec runs a statement; only those that running twice cannot change are
// retried (see idempotent).
func (c *retryingConn) Exec(ctx context.Context, query string, args ...any) error {
	if !idempotent(ctx, query) {
		return c.Conn.Exec(ctx, query, args...)
	}
	return c.retry(ctx, firstWord(query), func() error { return c.Conn.Exec(ctx, query, args...) })
}

// PrepareBatch starts a batch insert whose context ends only while the
// insert is in flight (see retryingConn).
func (c *retryingConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	bctx, stop := inFlight(ctx)
	b, err := c.Conn.PrepareBatch(bctx, query, opts...)
	if err != nil {
		stop()
		return nil, err
	}
	return &batch{Batch: b, stop: stop}, nil
}

// inFlight returns a context carrying ctx's values that ends when ctx
// ends, until stop is called; after stop it never ends.
func inFlight(ctx context.Context) (context.Context, func()) {
	bctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	return bctx, func() { unhook() }
}

// batch is a driver batch that detaches its context once it is sent or
// aborted.
type batch struct {
	driver.Batch
	stop func()
}

func (b *batch) Send() error {
	defer b.stop()
	return b.Batch.Send()
}

func (b *batch) Abort() error {
	defer b.stop()
	return b.Batch.Abort()
}

func (b *batch) Close() error {
	defer b.stop()
	return b.Batch.Close()
}

type idempotentKey struct{}

// Idempotent marks ctx's statements as safe to run twice (an insert of a
// marker whose duplicate changes nothing), so Exec retries them when a
// broken connection fails them.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

// idempotent reports whether running query twice gives what running it
// once does: reads, CREATE … IF NOT EXISTS, DROP … IF EXISTS, or a
// context marked Idempotent.
func idempotent(ctx context.Context, query string) bool {
	if ok, _ := ctx.Value(idempotentKey{}).(bool); ok {
		return true
	}
	q := strings.ToUpper(strings.Join(strings.Fields(query), " "))
	for _, p := range []string{"SELECT ", "EXISTS ", "DESCRIBE ", "SHOW ", "CREATE DATABASE IF NOT EXISTS ", "CREATE TABLE IF NOT EXISTS ", "DROP TABLE IF EXISTS ", "DROP DATABASE IF EXISTS "} {
		if strings.HasPrefix(q, p) {
			return true
		}
	}
	return false
}

func firstWord(query string) string {
	w, _, _ := strings.Cut(strings.TrimSpace(query), " ")
	return w
}

// IsConnectionError reports whether err is a broken or refused connection
// to ClickHouse (as opposed to an error the server answered with, or a
// cancelled context): the statement may not have reached the server, and
// the server may be down.
func IsConnectionError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return false
	}
	for _, target := range []error{net.ErrClosed, io.EOF, io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.ECONNREFUSED,
		syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, target) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// Some driver paths report a dead socket only in words.
	msg := err.Error()
	return strings.Contains(msg, "use of closed network connection") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "connection refused")
}

// IsUnavailable reports whether err means ClickHouse could not be reached
// or had no connection to spare: a fault of the server side, worth a
// retry later, never the caller's mistake.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, clickhouse.ErrAcquireConnTimeout) ||
		errors.Is(err, clickhouse.ErrConnectionClosed) || IsConnectionError(err)
}
