package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailorhq/tailor/featurestore/chserver"
)

// chDSN is this test binary's private ClickHouse.
var chDSN string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &chDSN)) }

// cli runs tailor commands in-process against the test ClickHouse, each test
// in a database of its own.
type cli struct {
	t   *testing.T
	db  string
	dsn string // "" means the binary's shared server
}

func (c *cli) server() string {
	if c.dsn != "" {
		return c.dsn
	}
	return chDSN
}

func newCLI(t *testing.T) *cli {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	c := &cli{t: t, db: "cli_" + hex.EncodeToString(b)}
	t.Cleanup(func() { c.exec("DROP DATABASE IF EXISTS " + c.db) })
	return c
}

// run executes `tailor args...` and returns stdout, stderr and the error
// main would print.
func (c *cli) run(args ...string) (string, string, error) {
	c.t.Helper()
	return c.runContext(context.Background(), args...)
}

// runContext is run with a context the caller may cancel, as SIGINT does.
func (c *cli) runContext(ctx context.Context, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(append([]string{"--clickhouse", c.server(), "--database", c.db}, args...))
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("tailor %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// fails runs a command that must fail and returns its error text.
func (c *cli) fails(args ...string) string {
	c.t.Helper()
	out, _, err := c.run(args...)
	if err == nil {
		c.t.Fatalf("tailor %s succeeded, want an error; stdout:\n%s", strings.Join(args, " "), out)
	}
	return err.Error()
}

// exec runs a statement that returns no rows.
func (c *cli) exec(q string) {
	c.t.Helper()
	s, err := openTestConn(c.server())
	if err != nil {
		c.t.Fatal(err)
	}
	defer s.Close()
	if err := s.Exec(context.Background(), q); err != nil {
		c.t.Fatalf("%s: %v", q, err)
	}
}

// sql runs a query through the store's connection and returns the rows as
// text, one line per row, tab-separated.
func (c *cli) sql(q string) string {
	c.t.Helper()
	s, err := openTestConn(c.server())
	if err != nil {
		c.t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.Query(context.Background(), q)
	if err != nil {
		c.t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var b strings.Builder
	cols := rows.ColumnTypes()
	for rows.Next() {
		vals := make([]any, len(cols))
		for i, ct := range cols {
			vals[i] = newScanTarget(ct.ScanType())
		}
		if err := rows.Scan(vals...); err != nil {
			c.t.Fatal(err)
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('\t')
			}
			fmt.Fprint(&b, deref(v))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// writeFiles writes name -> content under a new temp dir and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustContain(t *testing.T, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("output does not contain %q:\n%s", w, s)
		}
	}
}
