package chserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnvHome names the environment variable holding tailor's home directory.
const EnvHome = "TAILOR_HOME"

// managedStopTimeout is how long Managed.Stop waits after SIGTERM before
// SIGKILL.
const managedStopTimeout = 30 * time.Second

// DefaultHome returns $TAILOR_HOME, or ~/.tailor when it is unset.
func DefaultHome() (string, error) {
	if h := os.Getenv(EnvHome); h != "" {
		return h, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("chserver: %s is unset and no home directory: %w", EnvHome, err)
	}
	return filepath.Join(home, ".tailor"), nil
}

// Managed is the CLI's local ClickHouse: one detached server per tailor home,
// living in Home/clickhouse/ and described by Home/clickhouse/state.json. It
// keeps running after the command that started it exits, until Stop.
// Concurrent commands on the same home are serialised by a file lock.
type Managed struct {
	// Home is tailor's home directory; "" means DefaultHome().
	Home string
	// Logger receives lifecycle events; nil means slog.Default().
	Logger *slog.Logger
}

// Status describes the managed server.
type Status struct {
	Running  bool
	PID      int
	DSN      string // clickhouse://127.0.0.1:PORT/default
	HTTPAddr string // 127.0.0.1:PORT
	Version  string // from SELECT version()
	Dir      string // the server's directory, Home/clickhouse
}

// state is the content of state.json.
type state struct {
	PID       int       `json:"pid"`
	TCPPort   int       `json:"tcp_port"`
	HTTPPort  int       `json:"http_port"`
	StartedAt time.Time `json:"started_at"`
}

const stateFile = "state.json"

// Ensure returns the DSN of the managed server, starting it first when it is
// not running (started reports that). A server counts as running when its
// pid is alive and it answers `SELECT 1`. A new server reuses the previous
// ports when they are free.
func (m Managed) Ensure(ctx context.Context) (dsn string, started bool, err error) {
	dir, err := m.dir()
	if err != nil {
		return "", false, err
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	st, started, err := m.ensure(ctx, dir)
	if err != nil {
		return "", false, err
	}
	return dsnOf(st), started, nil
}

// Start starts the managed server unless it is running, and returns its
// status.
func (m Managed) Start(ctx context.Context) (Status, error) {
	if _, _, err := m.Ensure(ctx); err != nil {
		return Status{}, err
	}
	return m.Status(ctx)
}

// Status reports whether the managed server is running and where.
func (m Managed) Status(ctx context.Context) (Status, error) {
	dir, err := m.dir()
	if err != nil {
		return Status{}, err
	}
	out := Status{Dir: dir}
	st, err := running(ctx, dir)
	if err != nil || st == nil {
		return out, err
	}
	out.Running = true
	out.PID = st.PID
	out.DSN = dsnOf(st)
	out.HTTPAddr = loopback(st.HTTPPort)
	v, err := query(ctx, out.HTTPAddr, "SELECT version()")
	if err != nil {
		return out, fmt.Errorf("chserver: version: %w", err)
	}
	out.Version = strings.TrimSpace(v)
	return out, nil
}

// Stop sends the managed server SIGTERM and waits until its process is
// gone (SIGKILL after 30s, or sooner when ctx ends). Its state file keeps
// the ports, without a pid, so that the next start listens where clients
// of the old one (a running `tailor serve`) keep dialling. Stopping a
// server that is not running is a no-op.
func (m Managed) Stop(ctx context.Context) error {
	dir, err := m.dir()
	if err != nil {
		return err
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := readState(dir)
	if err != nil {
		return err
	}
	if st != nil && isServer(st.PID, dir) {
		if err := terminate(ctx, st.PID, dir, managedStopTimeout, m.logger()); err != nil {
			return err
		}
	}
	if st == nil || st.PID == 0 {
		return nil
	}
	if st.TCPPort == st.HTTPPort || st.TCPPort <= 0 || st.HTTPPort <= 0 {
		// Not ports a server could listen on: nothing worth keeping.
		if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("chserver: %w", err)
		}
		return nil
	}
	return writeState(dir, &state{TCPPort: st.TCPPort, HTTPPort: st.HTTPPort})
}

// Addr is the host:port of the managed server's native protocol: where it
// runs, or where it ran last and will run again when started. It reads
// the state file, so a server restarted on other ports is found.
func (m Managed) Addr() (string, error) {
	dir, err := m.dir()
	if err != nil {
		return "", err
	}
	st, err := readState(dir)
	if err != nil {
		return "", err
	}
	if st == nil || st.TCPPort <= 0 {
		return "", errors.New("chserver: the local ClickHouse was never started")
	}
	return loopback(st.TCPPort), nil
}

// writeState records st in dir's state file, atomically.
func writeState(dir string, st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("chserver: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, stateFile), append(data, '\n')); err != nil {
		return fmt.Errorf("chserver: write state: %w", err)
	}
	return nil
}

func (m Managed) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

// dir returns the absolute server directory, creating it.
func (m Managed) dir() (string, error) {
	home := m.Home
	if home == "" {
		h, err := DefaultHome()
		if err != nil {
			return "", err
		}
		home = h
	}
	dir, err := filepath.Abs(filepath.Join(home, "clickhouse"))
	if err != nil {
		return "", fmt.Errorf("chserver: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("chserver: %w", err)
	}
	// One spelling per directory: the server is recognised by the config
	// path on its command line.
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return "", fmt.Errorf("chserver: %w", err)
	}
	return dir, nil
}

// ensure is Ensure with the lock held.
func (m Managed) ensure(ctx context.Context, dir string) (*state, bool, error) {
	st, err := running(ctx, dir)
	if err != nil || st != nil {
		return st, false, err
	}
	prev, err := readState(dir)
	if err != nil {
		return nil, false, err
	}
	if prev != nil && isServer(prev.PID, dir) {
		// Alive but not answering: still starting (its starter died), or
		// hung. Give it the start timeout, then replace it.
		if err := waitAnswering(ctx, prev.PID, dir, loopback(prev.HTTPPort), DefaultStartTimeout); err == nil {
			return prev, false, nil
		}
		m.logger().Warn("managed clickhouse not answering, restarting it", "pid", prev.PID)
		if err := terminate(ctx, prev.PID, dir, managedStopTimeout, m.logger()); err != nil {
			return nil, false, err
		}
	}
	bin, err := findBinary("")
	if err != nil {
		return nil, false, fmt.Errorf("chserver: %w", err)
	}
	reuse := prev != nil && prev.TCPPort != prev.HTTPPort && portsFreeSoon(ctx, prev.TCPPort, prev.HTTPPort)
	for attempt := 1; ; attempt++ {
		st := &state{}
		if reuse && attempt == 1 {
			st.TCPPort, st.HTTPPort = prev.TCPPort, prev.HTTPPort
		} else {
			ports, err := freePorts(2)
			if err != nil {
				return nil, false, err
			}
			st.TCPPort, st.HTTPPort = ports[0], ports[1]
		}
		err := m.launch(ctx, dir, bin, st)
		if err == nil {
			return st, true, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			return nil, false, err
		}
		m.logger().Warn("clickhouse port taken, retrying on new ports", "port", takenPort(err), "tcp_port", st.TCPPort, "http_port", st.HTTPPort, "attempt", attempt)
	}
}

// launch starts a detached server on st's ports, waits until it is ready
// and records it in state.json.
func (m Managed) launch(ctx context.Context, dir string, bin binary, st *state) error {
	id, err := writeConfig(dir, st.TCPPort, st.HTTPPort)
	if err != nil {
		return err
	}
	offset := currentLogOffsets(dir)
	began := time.Now()
	p, err := spawn(bin, dir, true)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, dir, loopback(st.HTTPPort), id, DefaultStartTimeout, offset); err != nil {
		_ = signalGroup(p.pid, syscall.SIGKILL)
		<-p.done
		return err
	}
	st.PID, st.StartedAt = p.pid, time.Now().UTC()
	if err := writeState(dir, st); err != nil {
		_ = signalGroup(p.pid, syscall.SIGKILL)
		<-p.done
		return err
	}
	m.logger().Info("managed clickhouse started", "pid", p.pid, "tcp", loopback(st.TCPPort), "http", loopback(st.HTTPPort), "dir", dir, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// portsFreeSoon reports whether the ports are free, waiting up to 2s for a
// server that just died to release them: a process's sockets close after its
// memory (and so its /proc command line) is gone.
func portsFreeSoon(ctx context.Context, ports ...int) bool {
	deadline := time.Now().Add(2 * time.Second)
	for {
		free := true
		for _, p := range ports {
			free = free && portFree(p)
		}
		if free {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func dsnOf(st *state) string { return dsn(st.TCPPort) }

// readState reads state.json; nil when there is none.
func readState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chserver: %w", err)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("chserver: %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

// running returns the state of the server in dir when its pid is alive and
// it answers as the server of dir; nil otherwise.
func running(ctx context.Context, dir string) (*state, error) {
	st, err := readState(dir)
	if err != nil || st == nil {
		return nil, err
	}
	if !isServer(st.PID, dir) || probe(ctx, loopback(st.HTTPPort), readInstanceID(dir)) != probeOurs {
		return nil, nil
	}
	return st, nil
}

// isServer reports whether pid is alive and is a server started on dir's
// config, so a pid reused by an unrelated process is never signalled. A
// zombie has an empty command line and so counts as gone.
func isServer(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false
		}
		// No /proc to check with: trust the pid.
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	want := "--config-file=" + filepath.Join(dir, configFile)
	for arg := range strings.SplitSeq(string(cmdline), "\x00") {
		if arg == want {
			return true
		}
	}
	return false
}

// waitAnswering waits until the server pid of dir answers as ours, it dies,
// or timeout passes.
func waitAnswering(ctx context.Context, pid int, dir, httpAddr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if probe(ctx, httpAddr, readInstanceID(dir)) == probeOurs {
			return nil
		}
		if !isServer(pid, dir) {
			return errors.New("chserver: server exited")
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// terminate sends SIGTERM to the server pid of dir and waits until it is
// gone, sending SIGKILL after grace or when ctx ends.
func terminate(ctx context.Context, pid int, dir string, grace time.Duration, log *slog.Logger) error {
	began := time.Now()
	if err := signalGroup(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("chserver: SIGTERM %d: %w", pid, err)
	}
	if waitGone(ctx, pid, dir, grace) {
		log.Info("managed clickhouse stopped", "pid", pid, "took", time.Since(began).Round(time.Millisecond))
		return nil
	}
	log.Warn("managed clickhouse did not stop in time, killing", "pid", pid, "waited", time.Since(began).Round(time.Millisecond))
	if err := signalGroup(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("chserver: SIGKILL %d: %w", pid, err)
	}
	// SIGKILL cannot be ignored; the wait only covers the kernel's cleanup.
	if !waitGone(context.WithoutCancel(ctx), pid, dir, 10*time.Second) {
		return fmt.Errorf("chserver: pid %d still alive after SIGKILL", pid)
	}
	return nil
}

// waitGone polls until the server pid of dir is gone (true), or timeout
// passes or ctx ends (false).
func waitGone(ctx context.Context, pid int, dir string, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// An exiting process shows an empty cmdline before it is gone, so wait
	// for the process itself too (a zombie counts as gone).
	for isServer(pid, dir) || processAlive(pid) {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// lockDir takes an exclusive flock on dir/.lock, waiting for it until ctx
// ends, and returns its release. The descriptor is close-on-exec, so a
// server started while it is held does not inherit the lock.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chserver: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("chserver: lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("chserver: waiting for lock on %s: %w", dir, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
			if st := stat[i+2]; st == 'Z' || st == 'X' {
				return false
			}
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
