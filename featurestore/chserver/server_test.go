package chserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// testLogger sends the package's logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServer starts a server in dir (a new temporary one when ""), stopped
// when the test ends.
func startServer(t *testing.T, dir string) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Start(t.Context(), Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

// connect opens a clickhouse-go connection from the server's DSN.
func connect(t *testing.T, dsn string) driver.Conn {
	t.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", dsn, err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatalf("Ping %s: %v", dsn, err)
	}
	return conn
}

// mustQuery runs q over the HTTP interface.
func mustQuery(t *testing.T, httpAddr, q string) string {
	t.Helper()
	out, err := query(t.Context(), httpAddr, q)
	if err != nil {
		t.Fatalf("query %q on %s: %v", q, httpAddr, err)
	}
	return out
}

// alive reports whether a process with pid exists.
// alive reports whether pid is a running process (a zombie is not).
func alive(pid int) bool { return processAlive(pid) }

func TestStartAnswerStop(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")

	if got := mustQuery(t, s.HTTPAddr(), "SELECT 1"); got != "1\n" {
		t.Fatalf("SELECT 1 = %q", got)
	}
	pid := s.PID()
	if pid <= 0 || !alive(pid) {
		t.Fatalf("PID() = %d, not a live process", pid)
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("server process group = %d (%v), want its own (%d)", pgid, err, pid)
	}

	opts, err := clickhouse.ParseDSN(s.DSN())
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", s.DSN(), err)
	}
	if len(opts.Addr) != 1 || opts.Addr[0] != s.TCPAddr() || opts.Auth.Database != "default" {
		t.Errorf("ParseDSN(%q) = addr %v db %q, want [%s] default", s.DSN(), opts.Addr, opts.Auth.Database, s.TCPAddr())
	}
	var one uint8
	if err := connect(t, s.DSN()).QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("native SELECT 1 = %d, %v", one, err)
	}

	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s.PID() != 0 || alive(pid) {
		t.Errorf("after Stop: PID() = %d, process %d alive = %v", s.PID(), pid, alive(pid))
	}
	if _, err := query(t.Context(), s.HTTPAddr(), "SELECT 1"); err == nil {
		t.Error("server still answers after Stop")
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestTwoServersAtOnce(t *testing.T) {
	t.Parallel()
	var (
		wg      sync.WaitGroup
		servers [2]*Server
	)
	for i := range servers {
		wg.Go(func() {
			s, err := Start(t.Context(), Options{Dir: t.TempDir(), Logger: testLogger(t)})
			if err != nil {
				t.Errorf("Start %d: %v", i, err)
				return
			}
			t.Cleanup(func() { _ = s.Stop(context.Background()) })
			servers[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a, b := servers[0], servers[1]
	ports := map[string]bool{a.TCPAddr(): true, a.HTTPAddr(): true, b.TCPAddr(): true, b.HTTPAddr(): true}
	if len(ports) != 4 {
		t.Fatalf("servers share ports: %s %s / %s %s", a.TCPAddr(), a.HTTPAddr(), b.TCPAddr(), b.HTTPAddr())
	}
	if err := connect(t, a.DSN()).Exec(t.Context(), "CREATE TABLE only_in_a (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	const q = "SELECT count() FROM system.tables WHERE database = 'default' AND name = 'only_in_a'"
	if got := mustQuery(t, a.HTTPAddr(), q); got != "1\n" {
		t.Errorf("server a sees %q tables, want 1", got)
	}
	if got := mustQuery(t, b.HTTPAddr(), q); got != "0\n" {
		t.Errorf("server b sees %q tables, want 0", got)
	}
}

// fillTable creates a MergeTree table and inserts n rows through clickhouse-go.
func fillTable(t *testing.T, conn driver.Conn, n int) {
	t.Helper()
	ctx := t.Context()
	if err := conn.Exec(ctx, "CREATE TABLE events (id UInt64, name String) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO events (id, name)")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := batch.Append(uint64(i), "row"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// checkTable reads back what fillTable wrote, over both interfaces.
func checkTable(t *testing.T, s *Server, n int) {
	t.Helper()
	var count, sum uint64
	if err := connect(t, s.DSN()).QueryRow(t.Context(), "SELECT count(), sum(id) FROM events").Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	if want := uint64(n * (n - 1) / 2); count != uint64(n) || sum != want {
		t.Errorf("count, sum = %d, %d; want %d, %d", count, sum, n, want)
	}
	if got := mustQuery(t, s.HTTPAddr(), "SELECT count() FROM events WHERE name = 'row'"); strings.TrimSpace(got) != "1000" {
		t.Errorf("HTTP count = %q, want 1000", got)
	}
}

func TestRestartKeepsDataAndPorts(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	fillTable(t, connect(t, s.DSN()), 1000)
	tcp, http, pid := s.TCPAddr(), s.HTTPAddr(), s.PID()

	if err := s.Restart(t.Context()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.TCPAddr() != tcp || s.HTTPAddr() != http {
		t.Errorf("ports changed: %s %s -> %s %s", tcp, http, s.TCPAddr(), s.HTTPAddr())
	}
	if s.PID() == pid || alive(pid) {
		t.Errorf("Restart kept process %d (alive=%v)", pid, alive(pid))
	}
	checkTable(t, s, 1000)
}

func TestKillThenStartSameDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, dir)
	fillTable(t, connect(t, s.DSN()), 1000)
	pid := s.PID()

	if err := s.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if alive(pid) || s.PID() != 0 {
		t.Fatalf("process %d alive after Kill (PID() = %d)", pid, s.PID())
	}
	if _, err := query(t.Context(), s.HTTPAddr(), "SELECT 1"); err == nil {
		t.Fatal("server answers after Kill")
	}

	again, err := Start(t.Context(), Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Start on the killed server's directory: %v", err)
	}
	checkTable(t, again, 1000)
	if err := again.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Restart brings the killed server back too, on its old ports.
	tcp := s.TCPAddr()
	if err := s.Restart(t.Context()); err != nil {
		t.Fatalf("Restart after Kill: %v", err)
	}
	if s.TCPAddr() != tcp {
		t.Errorf("Restart moved %s to %s", tcp, s.TCPAddr())
	}
	checkTable(t, s, 1000)
}

func TestFixedPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	began := time.Now()
	_, err = Start(t.Context(), Options{Dir: t.TempDir(), HTTPPort: port, Logger: testLogger(t)})
	if !errors.Is(err, errAddrInUse) || takenPort(err) != port {
		t.Fatalf("Start on a taken port: err = %v, want port %d taken", err, port)
	}
	// A fixed port is not retried, and the failure is seen in the log
	// rather than by waiting for the server to exit.
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Start took %v to report the taken port", took)
	}
	t.Logf("error: %v", err)
}

func TestAnotherServerOnPortIsNotOurs(t *testing.T) {
	t.Parallel()
	other := startServer(t, "")
	_, err := Start(t.Context(), Options{Dir: t.TempDir(), HTTPPort: other.httpPort, Logger: testLogger(t)})
	if !errors.Is(err, errAddrInUse) || takenPort(err) != other.httpPort {
		t.Fatalf("Start on another server's HTTP port: err = %v, want port %d taken", err, other.httpPort)
	}
	if got := mustQuery(t, other.HTTPAddr(), "SELECT 1"); got != "1\n" {
		t.Errorf("the other server was disturbed: SELECT 1 = %q", got)
	}
}

func TestAutoPortClassification(t *testing.T) {
	s := &Server{tcpPort: 9000, httpPort: 8123}
	for _, tc := range []struct {
		opt  Options
		port int
		want bool
	}{
		{Options{}, 9000, true},
		{Options{}, 0, true},
		{Options{HTTPPort: 8123}, 9000, true},
		{Options{HTTPPort: 8123}, 8123, false},
		{Options{TCPPort: 9000}, 8123, true},
		{Options{TCPPort: 9000, HTTPPort: 8123}, 0, false},
		{Options{}, 1234, false},
	} {
		if got := s.autoPort(tc.opt, tc.port); got != tc.want {
			t.Errorf("autoPort(%+v, %d) = %v, want %v", tc.opt, tc.port, got, tc.want)
		}
	}
}

func TestBindFailure(t *testing.T) {
	for _, tc := range []struct {
		log  string
		port int
		ok   bool
	}{
		{"<Error> Application: Net Exception: Address already in use: 127.0.0.1:43497", 43497, true},
		{"Listen [::1]:9000 failed: Poco::Exception. Code: 1000, e.code() = 98, Net Exception: Address already in use: [::1]:9000 (version 24.3)", 9000, true},
		{"Address already in use", 0, true},
		{"<Error> Application: DB::Exception: Cannot lock file", 0, false},
	} {
		err := bindFailure(tc.log)
		if (err != nil) != tc.ok || takenPort(err) != tc.port {
			t.Errorf("bindFailure(%q) = %v (port %d), want ok=%v port %d", tc.log, err, takenPort(err), tc.ok, tc.port)
		}
	}
}

func TestMissingBinary(t *testing.T) {
	_, err := Start(t.Context(), Options{Dir: t.TempDir(), Binary: "/nonexistent"})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Binary /nonexistent: err = %v, want ErrNotInstalled", err)
	}

	t.Setenv(EnvBinary, "/nonexistent/clickhouse-server")
	_, err = Start(t.Context(), Options{Dir: t.TempDir()})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("%s=/nonexistent/...: err = %v, want ErrNotInstalled", EnvBinary, err)
	}
	_, _, err = Managed{Home: t.TempDir()}.Ensure(t.Context())
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Managed.Ensure with %s=/nonexistent/...: err = %v, want ErrNotInstalled", EnvBinary, err)
	}
}

func TestFindBinarySubcommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"clickhouse-server", nil},
		{"clickhouse", []string{"server"}},
	} {
		dir := t.TempDir()
		path := dir + "/" + tc.name
		if err := writeFileAtomic(path, []byte("#!/bin/sh\n")); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(path, 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := findBinary(path)
		if err != nil {
			t.Fatal(err)
		}
		if b.path != path || strings.Join(b.args, " ") != strings.Join(tc.args, " ") {
			t.Errorf("findBinary(%s) = %+v, want args %v", path, b, tc.args)
		}
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", loopback(p))
	if err != nil {
		t.Fatalf("FreePort() = %d, but listening on it fails: %v", p, err)
	}
	l.Close()
	ports, err := freePorts(2)
	if err != nil || ports[0] == ports[1] {
		t.Fatalf("freePorts(2) = %v, %v", ports, err)
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	pid := s.PID()
	// SIGSTOP keeps the server from handling SIGTERM; Stop must fall back
	// to SIGKILL at the context's deadline.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Errorf("process %d alive after Stop", pid)
	}
}
