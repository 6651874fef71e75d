package chserver

import (
	"context"
	"fmt"
	"os"
)

// TestRunner is what a test binary's TestMain receives (*testing.M).
type TestRunner interface{ Run() int }

// RunTests starts a private server in a temporary directory for a test
// binary, stores its DSN in dsn, runs the tests, stops the server and
// removes the directory. It returns the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }
func RunTests(m TestRunner, dsn *string) int {
	dir, err := os.MkdirTemp("", "tailor-test-clickhouse-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	srv, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start clickhouse:", err)
		return 1
	}
	defer srv.Stop(ctx)
	*dsn = srv.DSN()
	return m.Run()
}
