package chserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errAddrInUse marks a start that failed because a port was taken, either
// reported by the server itself or seen as another server answering on it.
// The error is a *portTakenError.
var errAddrInUse = errors.New("address already in use")

// portTakenError says which port a start found taken (0 when unknown).
type portTakenError struct{ port int }

func (e *portTakenError) Error() string {
	if e.port == 0 {
		return errAddrInUse.Error()
	}
	return fmt.Sprintf("%v: 127.0.0.1:%d", errAddrInUse, e.port)
}

func (e *portTakenError) Is(target error) bool { return target == errAddrInUse }

// takenPort returns the port of a portTakenError in err's chain, 0 if
// unknown.
func takenPort(err error) int {
	var pt *portTakenError
	if errors.As(err, &pt) {
		return pt.port
	}
	return 0
}

// addrInUse matches the server's bind failure, on 18.16
// ("Net Exception: Address already in use: 127.0.0.1:9000") and later
// versions ("... Address already in use: [::1]:9000").
var addrInUse = regexp.MustCompile(`Address already in use: \[?[^\s\]]*\]?:(\d+)`)

// bindFailure returns a *portTakenError when the log text reports a bind
// failure, nil otherwise.
func bindFailure(log string) error {
	m := addrInUse.FindStringSubmatch(log)
	if m == nil {
		if strings.Contains(log, "Address already in use") {
			return &portTakenError{}
		}
		return nil
	}
	port, _ := strconv.Atoi(m[1])
	return &portTakenError{port: port}
}

// process is one running clickhouse-server. done is closed once it has
// exited and been reaped; err holds what Wait returned.
type process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
	err  error
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// spawn starts the server binary on dir's config. A detached server gets its
// own session (it outlives the caller and never receives its terminal's
// signals); an attached one gets its own process group and SIGTERM when the
// starting thread dies, so a crashed test binary does not leave it behind.
// Either way a goroutine reaps it, so no zombie lingers while we live.
func spawn(bin binary, dir string, detached bool) (*process, error) {
	out, err := os.OpenFile(filepath.Join(dir, logDir, stdoutLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chserver: open stdout log: %w", err)
	}
	defer out.Close() // the child has its own copy

	args := append(append([]string(nil), bin.args...), "--config-file="+filepath.Join(dir, configFile))
	cmd := exec.Command(bin.path, args...)
	cmd.Dir = dir
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = out
	cmd.Stderr = out
	// Modern ClickHouse may fork a watchdog parent; keep one process whose
	// pid is the server's.
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCHDOG_ENABLE=0")
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("chserver: start %s: %w", bin.path, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// signalGroup sends sig to the process group led by pid (every server we
// start leads its own group), falling back to the pid alone.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err == nil {
		return nil
	}
	err := syscall.Kill(pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// probeClient talks to servers being probed. Keep-alives are off so probes
// leave no idle connections (or their goroutines) behind. Callers bound
// each request with their context; Timeout is a backstop.
var probeClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// query runs one read-only query over the HTTP interface and returns the
// response body.
func query(ctx context.Context, httpAddr, q string) (string, error) {
	u := "http://" + httpAddr + "/?query=" + url.QueryEscape(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{query: q, code: resp.StatusCode, body: strings.TrimSpace(string(body))}
	}
	return string(body), nil
}

// statusError is a query the server answered with an error status.
type statusError struct {
	query string
	code  int
	body  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("chserver: %s: HTTP %d: %s", e.query, e.code, e.body)
}

// probeTimeout bounds one readiness probe.
const probeTimeout = 2 * time.Second

// probeResult is what one readiness probe found.
type probeResult int

const (
	probeDown  probeResult = iota // no answer (yet)
	probeOurs                     // answers SELECT 1 and reads our instance id
	probeOther                    // answers, but it is another server
)

// probe checks that a server answers `SELECT 1` on httpAddr and that it is
// the server of instanceID: it reads the id file from its user_files
// directory, which only the server started on our directory can see.
//
// Each probe gets probeTimeout: a server that is up answers in
// milliseconds, and a port held by something that accepts but never answers
// must not stall the caller's loop.
func probe(ctx context.Context, httpAddr, instanceID string) probeResult {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	body, err := query(ctx, httpAddr, "SELECT 1")
	if err != nil || body != "1\n" {
		return probeDown
	}
	id, err := query(ctx, httpAddr, "SELECT id FROM file('"+instanceIDFile+"', 'TSV', 'id String')")
	var se *statusError
	switch {
	case errors.As(err, &se):
		return probeOther // it answered: it has no such file
	case err != nil:
		return probeDown // timeout or connection trouble: ask again
	case instanceID == "" || strings.TrimSpace(id) != instanceID:
		return probeOther
	}
	return probeOurs
}

// logOffsets are the sizes of the server's logs before a start, so that
// errors quote only what that start wrote.
type logOffsets struct{ errLog, stdout int64 }

func currentLogOffsets(dir string) logOffsets {
	return logOffsets{
		errLog: fileSize(filepath.Join(dir, logDir, errLogFile)),
		stdout: fileSize(filepath.Join(dir, logDir, stdoutLogFile)),
	}
}

// waitReady polls the server until it answers as ours, fails, or the timeout
// or ctx ends. A failure's error carries the tail of the logs written since
// off; it wraps a *portTakenError when a port was taken, which is noticed in
// the error log at once (18.16 takes seconds to exit after a bind failure).
// The caller kills the process on error.
func waitReady(ctx context.Context, p *process, dir, httpAddr, instanceID string, timeout time.Duration, off logOffsets) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	errLog := filepath.Join(dir, logDir, errLogFile)
	seen := off.errLog
	for {
		switch probe(ctx, httpAddr, instanceID) {
		case probeOurs:
			return nil
		case probeOther:
			// Someone else holds the HTTP port; our server cannot bind it.
			_, port, _ := net.SplitHostPort(httpAddr)
			n, _ := strconv.Atoi(port)
			return fmt.Errorf("chserver: another server answers on %s: %w", httpAddr, &portTakenError{port: n})
		}
		if size := fileSize(errLog); size != seen {
			seen = size
			if taken := bindFailure(readFrom(errLog, off.errLog, 64<<10)); taken != nil {
				return fmt.Errorf("chserver: clickhouse-server cannot listen: %w; log tail:\n%s", taken, logTail(dir, off))
			}
		}
		select {
		case <-p.done:
			tail := logTail(dir, off)
			err := fmt.Errorf("chserver: clickhouse-server exited during startup (%v); log tail:\n%s", p.err, tail)
			if taken := bindFailure(tail); taken != nil {
				err = fmt.Errorf("%w: %w", err, taken)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("chserver: clickhouse-server not ready on %s after %v: %w; log tail:\n%s",
				httpAddr, timeout, context.Cause(ctx), logTail(dir, off))
		case <-tick.C:
		}
	}
}

// fileSize returns the size of name, 0 when it does not exist.
func fileSize(name string) int64 {
	fi, err := os.Stat(name)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns what name holds after offset, at most the last max bytes
// of it.
func readFrom(name string, offset int64, max int64) string {
	f, err := os.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(name)
	if offset < 0 || offset > size {
		offset = 0 // truncated or replaced
	}
	if size-offset > max {
		offset = size - max
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(io.LimitReader(f, max))
	return string(data)
}

// logTail returns the end of what the server wrote to its error log and
// its stdout/stderr since off.
func logTail(dir string, off logOffsets) string {
	var parts []string
	for _, f := range []struct {
		name string
		from int64
	}{
		{filepath.Join(dir, logDir, errLogFile), off.errLog},
		{filepath.Join(dir, logDir, stdoutLogFile), off.stdout},
	} {
		if t := strings.TrimSpace(readFrom(f.name, f.from, 4096)); t != "" {
			parts = append(parts, t)
		}
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, "\n")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so another process may still take it;
// Start retries with new ports when that happens.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct free loopback ports, holding them all open
// until every one is picked so that they differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("chserver: pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portFree reports whether port can be listened on at 127.0.0.1 right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// loopback formats a 127.0.0.1 address.
func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// dsn returns the clickhouse-go DSN of the server on tcpPort.
func dsn(tcpPort int) string { return "clickhouse://" + loopback(tcpPort) + "/default" }
