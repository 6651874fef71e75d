package rpcerr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
)

// notFound and precondition are errors that say their class.
type notFound struct{}

func (notFound) Error() string  { return "no such thing" }
func (notFound) NotFound() bool { return true }

type precondition struct{}

func (precondition) Error() string            { return "archived" }
func (precondition) FailedPrecondition() bool { return true }

func TestCode(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	exception := func(code int32) error {
		return fmt.Errorf("latest rows of v: %w", &clickhouse.Exception{Code: code, Name: "X", Message: "SELECT secret FROM t WHERE ..."})
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want connect.Code
	}{
		{"already coded", context.Background(), connect.NewError(connect.CodeNotFound, errors.New("x")), connect.CodeNotFound},
		{"context ended", cancelled, errors.New("whatever"), connect.CodeCanceled},
		{"deadline in the chain", context.Background(), fmt.Errorf("q: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded},
		{"connection refused", context.Background(), &net.OpError{Op: "dial", Err: errors.New("connection refused")}, connect.CodeUnavailable},
		{"connection broke", context.Background(), fmt.Errorf("read: %w", io.EOF), connect.CodeUnavailable},
		{"pool exhausted", context.Background(), fmt.Errorf("export: %w", clickhouse.ErrAcquireConnTimeout), connect.CodeUnavailable},
		{"store marked unavailable", context.Background(), fmt.Errorf("%w: x", offline.ErrUnavailable), connect.CodeUnavailable},
		{"marked invalid", context.Background(), rpcerr.Invalidf("bad %s", "thing"), connect.CodeInvalidArgument},
		{"bad reference", context.Background(), fmt.Errorf("x: %w", &definitions.RefError{Ref: "a:b", Reason: "no"}), connect.CodeInvalidArgument},
		{"bad cell", context.Background(), &offline.CellError{File: "f", Row: 1, Column: "c", Msg: "m"}, connect.CodeInvalidArgument},
		{"entity query refused", context.Background(), &offline.QueryError{Query: "SELEC", Err: exception(62)}, connect.CodeInvalidArgument},
		{"entity query unreachable", context.Background(), &offline.QueryError{Query: "SELECT 1", Err: io.EOF}, connect.CodeUnavailable},
		{"not found", context.Background(), fmt.Errorf("m: %w", notFound{}), connect.CodeNotFound},
		{"failed precondition", context.Background(), fmt.Errorf("m: %w", precondition{}), connect.CodeFailedPrecondition},
		{"memory limit", context.Background(), exception(241), connect.CodeResourceExhausted},
		{"too many queries", context.Background(), exception(202), connect.CodeUnavailable},
		{"clickhouse timeout", context.Background(), exception(159), connect.CodeDeadlineExceeded},
		{"unexpected exception", context.Background(), exception(47), connect.CodeInternal},
		{"anything else", context.Background(), errors.New("boom"), connect.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rpcerr.Code(tc.ctx, tc.err); got != tc.want {
				t.Fatalf("Code(%v) = %s, want %s", tc.err, got, tc.want)
			}
			if got := rpcerr.Error(tc.ctx, tc.err).Code(); got != tc.want {
				t.Fatalf("Error(%v).Code() = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

// TestErrorQuietsClickHouseText: an Internal error does not quote the
// server's SQL to the caller, but keeps its chain; the caller's own query
// is quoted back to them.
func TestErrorQuietsClickHouseText(t *testing.T) {
	ex := &clickhouse.Exception{Code: 47, Name: "UNKNOWN_IDENTIFIER", Message: "Missing columns: 'secret' while processing query: 'SELECT secret FROM t'"}
	err := rpcerr.Error(context.Background(), fmt.Errorf("latest rows of v: %w", ex))
	if strings.Contains(err.Message(), "SELECT") || !strings.Contains(err.Message(), "47") || !strings.Contains(err.Message(), "latest rows of v") {
		t.Fatalf("internal message %q: want the context and the code, not the SQL", err.Message())
	}
	var back *clickhouse.Exception
	if !errors.As(err, &back) {
		t.Fatal("the exception is no longer in the chain")
	}
	mine := rpcerr.Error(context.Background(), &offline.QueryError{Query: "SELECT secret FROM t", Err: ex})
	if mine.Code() != connect.CodeInvalidArgument || !strings.Contains(mine.Message(), "Missing columns") {
		t.Fatalf("the caller's own query: %s %q", mine.Code(), mine.Message())
	}
}
