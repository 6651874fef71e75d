package offline_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// dsn is the private ClickHouse server of this test binary, started in
// TestMain; every test works in a database of its own.
var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

// openStore opens a store on a fresh database dropped when the test ends.
func openStore(t testing.TB) *offline.Store {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		_ = s.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		s.Close()
	})
	return s
}

// parseRepo parses definitions given as file name -> YAML text.
func parseRepo(t testing.TB, files map[string]string) *definitions.Repo {
	t.Helper()
	in := map[string][]byte{}
	for k, v := range files {
		in[k] = []byte(v)
	}
	repo, err := definitions.Parse(in)
	if err != nil {
		t.Fatalf("parse definitions: %v", err)
	}
	return repo
}
