// Package chserver runs a private clickhouse-server process: for tests
// (Start, one server per temporary directory, on free loopback ports) and as
// the managed local server of the tailor CLI (Managed, a detached daemon
// under $TAILOR_HOME that outlives the command that started it).
//
// It writes its own config, so it works with Debian's clickhouse-server 18.16
// and with a modern single clickhouse binary alike, as a normal process
// without systemd or Docker.
package chserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds how long Start waits for the server to answer.
const DefaultStartTimeout = 60 * time.Second

// defaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL
// when its context has no deadline.
const defaultStopTimeout = 10 * time.Second

// startAttempts is how many times Start tries fresh ports when the ones it
// picked were taken before the server could bind them.
const startAttempts = 3

// Options configure Start.
type Options struct {
	// Dir holds the config, data and logs. Required; created if missing.
	Dir string
	// TCPPort and HTTPPort are the native and HTTP ports on 127.0.0.1;
	// 0 picks a free one.
	TCPPort, HTTPPort int
	// Binary is the server executable; "" finds it from
	// $TAILOR_CLICKHOUSE_SERVER, then clickhouse-server, then clickhouse.
	Binary string
	// StartTimeout bounds the wait for readiness; 0 means
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// Logger receives lifecycle events; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a clickhouse-server process started by Start. Its methods are
// safe for concurrent use.
type Server struct {
	dir               string
	bin               binary
	tcpPort, httpPort int
	timeout           time.Duration
	log               *slog.Logger

	mu  sync.Mutex // serialises Stop, Kill and Restart
	cur atomic.Pointer[process]
}

// Start writes a config into opt.Dir, starts clickhouse-server in its own
// process group and waits until it answers `SELECT 1` over HTTP. If the
// process exits first, the error includes the tail of its error log. When a
// port picked by Start turns out to be taken, it retries with new ports.
// The server is stopped with Stop; it also gets SIGTERM if the calling
// process dies.
func Start(ctx context.Context, opt Options) (*Server, error) {
	if opt.Dir == "" {
		return nil, errors.New("chserver: Options.Dir is required")
	}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("chserver: %w", err)
	}
	bin, err := findBinary(opt.Binary)
	if err != nil {
		return nil, fmt.Errorf("chserver: %w", err)
	}
	s := &Server{dir: dir, bin: bin, timeout: opt.StartTimeout, log: opt.Logger}
	if s.timeout <= 0 {
		s.timeout = DefaultStartTimeout
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		s.tcpPort, s.httpPort = pick(opt.TCPPort, ports[0]), pick(opt.HTTPPort, ports[1])
		err = s.launch(ctx)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errAddrInUse) || !s.autoPort(opt, takenPort(err)) || attempt == startAttempts {
			return nil, err
		}
		s.log.Warn("clickhouse port taken, retrying on new ports", "port", takenPort(err), "tcp_port", s.tcpPort, "http_port", s.httpPort, "attempt", attempt)
	}
}

// autoPort reports whether port is one Start picked rather than one opt
// fixed; for an unknown port (0), whether Start picked any.
func (s *Server) autoPort(opt Options, port int) bool {
	switch port {
	case 0:
		return opt.TCPPort == 0 || opt.HTTPPort == 0
	case s.tcpPort:
		return opt.TCPPort == 0
	case s.httpPort:
		return opt.HTTPPort == 0
	}
	return false
}

// pick returns fixed when set, else auto.
func pick(fixed, auto int) int {
	if fixed != 0 {
		return fixed
	}
	return auto
}

// launch writes the config for the current ports, starts the process and
// waits until it is ready; on failure nothing is left running.
func (s *Server) launch(ctx context.Context) error {
	id, err := writeConfig(s.dir, s.tcpPort, s.httpPort)
	if err != nil {
		return err
	}
	offset := currentLogOffsets(s.dir)
	began := time.Now()
	p, err := spawn(s.bin, s.dir, false)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, s.dir, s.HTTPAddr(), id, s.timeout, offset); err != nil {
		_ = signalGroup(p.pid, syscall.SIGKILL)
		<-p.done
		return err
	}
	s.cur.Store(p)
	s.log.Info("clickhouse started", "pid", p.pid, "tcp", s.TCPAddr(), "http", s.HTTPAddr(), "dir", s.dir, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// TCPAddr returns the native protocol address, "127.0.0.1:PORT".
func (s *Server) TCPAddr() string { return loopback(s.tcpPort) }

// HTTPAddr returns the HTTP interface address, "127.0.0.1:PORT".
func (s *Server) HTTPAddr() string { return loopback(s.httpPort) }

// DSN returns "clickhouse://127.0.0.1:PORT/default", for clickhouse.ParseDSN.
func (s *Server) DSN() string { return dsn(s.tcpPort) }

// Dir returns the absolute directory holding the server's config and data.
func (s *Server) Dir() string { return s.dir }

// PID returns the process id of the running server, 0 when it is stopped.
func (s *Server) PID() int {
	if p := s.cur.Load(); p != nil && !p.exited() {
		return p.pid
	}
	return 0
}

// Stop sends SIGTERM and waits for the server to exit, escalating to SIGKILL
// at ctx's deadline (10s when ctx has none) or when ctx is cancelled.
// Stopping a stopped server is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop(ctx)
}

func (s *Server) stop(ctx context.Context) error {
	p := s.cur.Swap(nil)
	if p == nil || p.exited() {
		return nil
	}
	began := time.Now()
	grace := defaultStopTimeout
	if d, ok := ctx.Deadline(); ok {
		grace = time.Until(d)
	}
	if err := signalGroup(p.pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("chserver: SIGTERM %d: %w", p.pid, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		s.log.Info("clickhouse stopped", "pid", p.pid, "took", time.Since(began).Round(time.Millisecond))
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	s.log.Warn("clickhouse did not stop in time, killing", "pid", p.pid, "waited", time.Since(began).Round(time.Millisecond))
	if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("chserver: SIGKILL %d: %w", p.pid, err)
	}
	<-p.done
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone, as a crash would
// leave things. Killing a stopped server is a no-op.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cur.Swap(nil)
	if p == nil || p.exited() {
		return nil
	}
	if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("chserver: SIGKILL %d: %w", p.pid, err)
	}
	<-p.done
	s.log.Info("clickhouse killed", "pid", p.pid)
	return nil
}

// Restart stops the server (if running) and starts it again on the same
// ports and data directory, as ClickHouse going away and coming back.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(ctx); err != nil {
		return err
	}
	return s.launch(ctx)
}
