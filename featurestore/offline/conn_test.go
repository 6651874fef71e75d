package offline_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/offline"
)

// breakingProxy forwards TCP connections to a server; break makes every
// connection open at that moment fail on its next request: the server
// side is closed as soon as the client sends anything, as when ClickHouse
// restarts or a pooled socket died unnoticed.
type breakingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	armed  map[net.Conn]bool
	broken int
}

func newBreakingProxy(t *testing.T, target string) *breakingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &breakingProxy{ln: ln, target: target, armed: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *breakingProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.armed[client] = false
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.armed, client)
		p.mu.Unlock()
		client.Close()
		server.Close()
	}()
	go func() { _, _ = io.Copy(client, server); client.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			armed := p.armed[client]
			if armed {
				p.broken++
			}
			p.mu.Unlock()
			if armed {
				return // the request never reaches the server
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// breakAll arms every connection open now.
func (p *breakingProxy) breakAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.armed {
		p.armed[c] = true
	}
}

func (p *breakingProxy) brokenRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broken
}

// TestBrokenPooledConnectionIsRetried: a read whose pooled connection
// turns out dead is answered on a fresh one instead of failing the
// caller, and a statement that is not safe to repeat is not repeated.
func TestBrokenPooledConnectionIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := openStore(t)
	target := strings.TrimPrefix(dsn, "clickhouse://")
	target, _, _ = strings.Cut(target, "/")
	proxy := newBreakingProxy(t, target)
	s, err := offline.Open(ctx, "clickhouse://"+proxy.ln.Addr().String(), offline.Options{Database: base.Database(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for round := range 3 {
		if _, err := s.Now(ctx); err != nil {
			t.Fatal(err)
		}
		proxy.breakAll()
		before := proxy.brokenRequests()
		now, err := s.Now(ctx)
		if err != nil {
			t.Fatalf("round %d: a read over a broken pooled connection failed: %v", round, err)
		}
		if now.IsZero() || proxy.brokenRequests() == before {
			t.Fatalf("round %d: the read did not meet a broken connection (%d broken)", round, proxy.brokenRequests())
		}
	}
	// An insert is not repeated blindly: it fails, and says ClickHouse is
	// unavailable.
	if err := s.Conn().Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.Database()+".once (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	proxy.breakAll()
	err = s.Conn().Exec(ctx, "INSERT INTO "+s.Database()+".once (x) SELECT 1")
	if err == nil || !offline.IsUnavailable(err) {
		t.Fatalf("insert over a broken connection: %v, want a connection error", err)
	}
}

func TestIsConnectionError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{net.ErrClosed, true},
		{io.EOF, true},
		{&net.OpError{Op: "read", Err: io.ErrUnexpectedEOF}, true},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{io.ErrShortWrite, false},
	} {
		if got := offline.IsConnectionError(tc.err); got != tc.want {
			t.Errorf("IsConnectionError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
