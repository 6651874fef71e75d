package chserver

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// managed returns a Managed on a fresh home, stopped when the test ends.
func managed(t *testing.T) Managed {
	t.Helper()
	m := Managed{Home: t.TempDir(), Logger: testLogger(t)}
	t.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return m
}

func readStateFile(t *testing.T, m Managed) state {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(m.Home, "clickhouse", stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("state.json: %v\n%s", err, data)
	}
	return st
}

func TestManagedEnsureStatusStop(t *testing.T) {
	t.Parallel()
	m := managed(t)
	ctx := t.Context()

	if st, err := m.Status(ctx); err != nil || st.Running {
		t.Fatalf("Status before start = %+v, %v; want not running", st, err)
	}
	dsn1, started, err := m.Ensure(ctx)
	if err != nil || !started {
		t.Fatalf("first Ensure = %q, started %v, %v", dsn1, started, err)
	}
	dsn2, started, err := m.Ensure(ctx)
	if err != nil || started || dsn2 != dsn1 {
		t.Fatalf("second Ensure = %q, started %v, %v; want %q, false", dsn2, started, err, dsn1)
	}

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := readStateFile(t, m)
	if !st.Running || st.DSN != dsn1 || st.PID != file.PID || st.HTTPAddr != loopback(file.HTTPPort) ||
		st.Version == "" || st.Dir != filepath.Join(m.Home, "clickhouse") || file.StartedAt.IsZero() {
		t.Errorf("Status = %+v, state.json = %+v", st, file)
	}
	if sid, err := getsid(st.PID); err != nil || sid != st.PID {
		t.Errorf("managed server session = %d (%v), want its own (%d)", sid, err, st.PID)
	}
	connect(t, st.DSN) // the DSN works with clickhouse-go
	t.Logf("status: %+v", st)

	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(st.PID) {
		t.Errorf("process %d alive after Stop", st.PID)
	}
	if after, err := m.Status(ctx); err != nil || after.Running {
		t.Errorf("Status after Stop = %+v, %v; want not running", after, err)
	}
	if kept := readStateFile(t, m); kept.PID != 0 || kept.TCPPort != file.TCPPort || kept.HTTPPort != file.HTTPPort {
		t.Errorf("state.json after Stop = %+v; want no pid and the ports of %+v", kept, file)
	}
	if err := m.Stop(ctx); err != nil {
		t.Errorf("Stop when not running: %v", err)
	}
	if addr, err := m.Addr(); err != nil || "clickhouse://"+addr+"/default" != dsn1 {
		t.Errorf("Addr after Stop = %q, %v; want the address of %s", addr, err, dsn1)
	}

	// Started again, it listens where it did: clients keep their URL.
	dsn3, started, err := m.Ensure(ctx)
	if err != nil || !started || dsn3 != dsn1 {
		t.Fatalf("Ensure after Stop = %q, started %v, %v; want %q again", dsn3, started, err, dsn1)
	}
	connect(t, dsn3)
}

func TestManagedRestartsAfterCrashOnSamePorts(t *testing.T) {
	t.Parallel()
	m := managed(t)
	ctx := t.Context()
	dsn1, _, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := readStateFile(t, m).PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(ctx, pid, filepath.Join(m.Home, "clickhouse"), 10*time.Second) {
		t.Fatalf("process %d not gone after SIGKILL", pid)
	}
	if st, err := m.Status(ctx); err != nil || st.Running {
		t.Fatalf("Status after crash = %+v, %v; want not running", st, err)
	}
	dsn2, started, err := m.Ensure(ctx)
	if err != nil || !started {
		t.Fatalf("Ensure after crash = %q, started %v, %v", dsn2, started, err)
	}
	if dsn2 != dsn1 {
		t.Errorf("Ensure after crash moved from %s to %s although the ports were free", dsn1, dsn2)
	}
}

func TestManagedHomeThroughSymlink(t *testing.T) {
	t.Parallel()
	m := managed(t)
	link := filepath.Join(t.TempDir(), "home-link")
	if err := os.Symlink(m.Home, link); err != nil {
		t.Fatal(err)
	}
	dsn, _, err := m.Ensure(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	other := Managed{Home: link, Logger: testLogger(t)}
	dsn2, started, err := other.Ensure(t.Context())
	if err != nil || started || dsn2 != dsn {
		t.Errorf("Ensure through a symlinked home = %q, started %v, %v; want the running %q", dsn2, started, err, dsn)
	}
}

func TestManagedStaleState(t *testing.T) {
	t.Parallel()
	m := Managed{Home: t.TempDir(), Logger: testLogger(t)}
	dir := filepath.Join(m.Home, "clickhouse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// pid 1 is alive but is not our server: it must be neither reported nor
	// signalled.
	stale := `{"pid": 1, "tcp_port": 1, "http_port": 2, "started_at": "2020-01-01T00:00:00Z"}`
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(t.Context()); err != nil || st.Running {
		t.Fatalf("Status with stale state = %+v, %v; want not running", st, err)
	}
	if err := m.Stop(t.Context()); err != nil {
		t.Fatalf("Stop with stale state: %v", err)
	}
	if st := readStateFile(t, m); st.PID != 0 {
		t.Errorf("stale pid kept after Stop: %+v", st)
	}
	if !alive(1) {
		t.Error("pid 1 was signalled")
	}
}

// helperHomeEnv makes the test binary act as a CLI that runs Ensure and exits.
const helperHomeEnv = "CHSERVER_TEST_ENSURE_HOME"

func TestMain(m *testing.M) {
	if home := os.Getenv(helperHomeEnv); home != "" {
		dsn, _, err := Managed{Home: home}.Ensure(context.Background())
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString(dsn + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestManagedOutlivesStarter(t *testing.T) {
	t.Parallel()
	m := managed(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0])
	cmd.Env = append(os.Environ(), helperHomeEnv+"="+m.Home)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper Ensure: %v\n%s", err, out)
	}
	st, err := m.Status(t.Context())
	if err != nil || !st.Running || st.DSN != strings.TrimSpace(string(out)) {
		t.Fatalf("after the starter exited: Status = %+v, %v; starter printed %q", st, err, out)
	}
	if _, started, err := m.Ensure(t.Context()); err != nil || started {
		t.Errorf("Ensure from another process = started %v, %v; want the running server", started, err)
	}
}

// getsid returns the session id of pid.
func getsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}
