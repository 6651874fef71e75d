package chserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnvBinary names the environment variable that points at the ClickHouse
// server binary: a clickhouse-server, or a single clickhouse binary (run as
// "clickhouse server").
const EnvBinary = "TAILOR_CLICKHOUSE_SERVER"

// ErrNotInstalled is returned (wrapped) by Start and Managed when no
// ClickHouse server binary can be found.
var ErrNotInstalled = errors.New("clickhouse-server not found on PATH: run `make deps` (or set " + EnvBinary + ")")

// binary is a resolved ClickHouse server executable and the arguments that
// come before --config-file ("server" for the single clickhouse binary).
type binary struct {
	path string
	args []string
}

// findBinary resolves the server binary: explicit when set, else $EnvBinary,
// else clickhouse-server on PATH (or in /usr/sbin, which a non-root PATH
// often lacks), else clickhouse.
func findBinary(explicit string) (binary, error) {
	if explicit != "" {
		return resolve(explicit)
	}
	if env := os.Getenv(EnvBinary); env != "" {
		b, err := resolve(env)
		if err != nil {
			return binary{}, fmt.Errorf("%s=%q: %w", EnvBinary, env, err)
		}
		return b, nil
	}
	for _, name := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "clickhouse", "/usr/bin/clickhouse"} {
		if b, err := resolve(name); err == nil {
			return b, nil
		}
	}
	return binary{}, ErrNotInstalled
}

// resolve turns a name or path into a binary, deciding from its base name
// whether it needs the "server" subcommand.
func resolve(name string) (binary, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return binary{}, fmt.Errorf("%w (%s: %v)", ErrNotInstalled, name, err)
	}
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	b := binary{path: p}
	if strings.TrimSuffix(filepath.Base(p), ".exe") == "clickhouse" {
		b.args = []string{"server"}
	}
	return b, nil
}
