package featureserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
)

// TestStoreOnce: an insert whose connection broke is tried again only
// when its rows are not stored, so a lost answer never stores them twice;
// other errors are not retried.
func TestStoreOnce(t *testing.T) {
	broken := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	refused := errors.New("ClickHouse refused the insert")
	for _, tc := range []struct {
		name        string
		inserts     []error  // what each insert returns
		stored      []uint64 // what each look returns
		wantInserts int
		wantErr     error
	}{
		{"works at once", []error{nil}, nil, 1, nil},
		{"answer lost after storing", []error{broken}, []uint64{2}, 1, nil},
		{"broke before storing", []error{broken, nil}, []uint64{0}, 2, nil},
		{"broke every time", []error{broken, broken, broken}, []uint64{0, 0}, 3, broken},
		{"refused", []error{refused}, nil, 1, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{log: slog.New(slog.DiscardHandler)}
			var inserts, looks int
			insert := func() error { inserts++; return tc.inserts[inserts-1] }
			stored := func() (uint64, error) { looks++; return tc.stored[looks-1], nil }
			replayed, err := s.storeOnce(context.Background(), &pushPlan{}, "v", 2, insert, stored)
			if !errors.Is(err, tc.wantErr) || replayed || inserts != tc.wantInserts {
				t.Fatalf("err %v replayed %v after %d inserts; want %v after %d", err, replayed, inserts, tc.wantErr, tc.wantInserts)
			}
		})
	}
}
