// Package rpcerr gives every failure of a request the Connect code a
// client can act on, in one place for every service: the client's
// mistakes are InvalidArgument (or NotFound, FailedPrecondition), never
// Unavailable or Internal, so retries follow only what a retry can fix.
//
// The classes, first match wins:
//
//	the request's context ended            Canceled / DeadlineExceeded
//	already a *connect.Error                its code
//	ClickHouse unreachable, no connection   Unavailable
//	  to spare, a connection broke
//	an error saying InvalidInput()          InvalidArgument
//	an error saying NotFound()              NotFound
//	an error saying FailedPrecondition()    FailedPrecondition
//	ClickHouse over its memory limit        ResourceExhausted
//	ClickHouse too busy (too many queries)  Unavailable
//	ClickHouse's own timeout                DeadlineExceeded
//	anything else                           Internal
//
// Errors mark their class with a method (InvalidInput() bool, and so on)
// rather than by package, so that the packages that raise them need not
// know about Connect.
package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// invalidInput is implemented by errors that are the caller's mistake.
type invalidInput interface{ InvalidInput() bool }

// notFound is implemented by errors about something that does not exist.
type notFound interface{ NotFound() bool }

// failedPrecondition is implemented by errors about something that exists
// but is not in a state to serve the request (an archived model version).
type failedPrecondition interface{ FailedPrecondition() bool }

// invalid is an error Invalid marked as the caller's mistake.
type invalid struct{ err error }

func (e *invalid) Error() string      { return e.err.Error() }
func (e *invalid) Unwrap() error      { return e.err }
func (e *invalid) InvalidInput() bool { return true }

// Invalid marks err as the caller's mistake: Code gives it
// InvalidArgument.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return &invalid{err}
}

// Invalidf is Invalid(fmt.Errorf(format, args...)).
func Invalidf(format string, args ...any) error { return Invalid(fmt.Errorf(format, args...)) }

// ContextCode is the code of a request whose context ended:
// DeadlineExceeded when its deadline passed, Canceled when the client went
// away.
func ContextCode(ctx context.Context) connect.Code {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeCanceled
}

// ClickHouse exception codes with a class of their own.
const (
	chTimeoutExceeded    = 159
	chTooManyQueries     = 202
	chMemoryLimitReached = 241
)

// Code is the Connect code of err, raised while serving a request whose
// context is ctx (see the package comment).
func Code(ctx context.Context, err error) connect.Code {
	if ctx != nil && ctx.Err() != nil {
		return ContextCode(ctx)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	if errors.Is(err, context.Canceled) {
		return connect.CodeCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.CodeDeadlineExceeded
	}
	if offline.IsUnavailable(err) {
		return connect.CodeUnavailable
	}
	var in invalidInput
	if errors.As(err, &in) && in.InvalidInput() {
		return connect.CodeInvalidArgument
	}
	var nf notFound
	if errors.As(err, &nf) && nf.NotFound() {
		return connect.CodeNotFound
	}
	var fp failedPrecondition
	if errors.As(err, &fp) && fp.FailedPrecondition() {
		return connect.CodeFailedPrecondition
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case chMemoryLimitReached:
			return connect.CodeResourceExhausted
		case chTooManyQueries:
			return connect.CodeUnavailable
		case chTimeoutExceeded:
			return connect.CodeDeadlineExceeded
		}
	}
	return connect.CodeInternal
}

// Error is err as a Connect error with its code (see Code). An error that
// is not the caller's gets its ClickHouse exceptions shortened to their
// code and name: their text can quote the query, which is the server's
// business, not the caller's.
func Error(ctx context.Context, err error) *connect.Error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code := Code(ctx, err)
	if code != connect.CodeInvalidArgument {
		err = quiet(err)
	}
	return connect.NewError(code, err)
}

// quiet replaces the text of a ClickHouse exception in err's message by
// its code and name, keeping the context around it and the chain for
// errors.Is and errors.As.
func quiet(err error) error {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return err
	}
	msg := strings.Replace(err.Error(), ex.Error(), fmt.Sprintf("ClickHouse exception %d (%s)", ex.Code, ex.Name), 1)
	return &quieted{msg: msg, err: err}
}

type quieted struct {
	msg string
	err error
}

func (q *quieted) Error() string { return q.msg }
func (q *quieted) Unwrap() error { return q.err }
