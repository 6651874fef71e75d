package predlog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// dsn is the private ClickHouse server of this test binary, started in
// TestMain; every test works in a database of its own.
var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

var quiet = slog.New(slog.DiscardHandler)

// openDB opens a connection to server on a fresh database dropped when
// the test ends.
func openDB(t testing.TB, server string) (driver.Conn, string) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := offline.Open(ctx, server, offline.Options{Database: db, Logger: quiet})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+db)
		s.Close()
	})
	return s.Conn(), db
}

// startServer starts a ClickHouse server of the test's own, to stop,
// freeze or kill; it is resumed and stopped when the test ends.
func startServer(t *testing.T) *chserver.Server {
	t.Helper()
	srv, err := chserver.Start(context.Background(), chserver.Options{Dir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	t.Cleanup(func() {
		if pid := srv.PID(); pid != 0 {
			_ = syscall.Kill(-pid, syscall.SIGCONT)
		}
		_ = srv.Stop(context.Background())
	})
	return srv
}

// freeze stops srv's process group (SIGSTOP): connections are accepted by
// the kernel and never answered, as a hung server. The returned func
// resumes it.
func freeze(t *testing.T, srv *chserver.Server) (resume func()) {
	t.Helper()
	pid := srv.PID()
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP clickhouse: %v", err)
	}
	return func() {
		if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
			t.Errorf("SIGCONT clickhouse: %v", err)
		}
	}
}

// metric returns the value of the counter or gauge name whose labels
// include want ("" matches a metric without labels).
func metric(t *testing.T, g prometheus.Gatherer, name, want string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if strings.Join(labels, ",") != want {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, want)
	return 0
}

// logBuffer collects a log's text output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func (b *logBuffer) has(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}
