package featureserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/rpcerr"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// MaxIdempotencyKey bounds a push's idempotency key, in bytes.
const MaxIdempotencyKey = 128

// pushClockSlack widens the insertion-time bound a push looks for its own
// rows from: the server's clock and ClickHouse's may differ a little.
const pushClockSlack = 5 * time.Second

// pushAttempts bounds how often a push whose connection broke is tried.
const pushAttempts = 3

// pushPlan is what a push knows before it stores anything: its key, the
// first attempt with that key (nil: none), and from when rows it stored
// carry insertion times.
type pushPlan struct {
	key    string
	digest string
	first  *offline.PushAttempt
	now    time.Time
}

// created is the created time of rows without one: the first attempt's,
// so that a retry stores the very same rows.
func (p *pushPlan) created() int64 {
	if p.first != nil {
		return p.first.Created
	}
	return p.now.Unix()
}

// since is the insertion time from which the push's rows may be stored.
func (p *pushPlan) since() time.Time {
	if p.first != nil {
		return p.first.At.Add(-pushClockSlack)
	}
	return p.now.Add(-pushClockSlack)
}

// planPush reads the request's idempotency key and the push it repeats.
func (s *Server) planPush(ctx context.Context, msg *featurestorev1.PushRequest) (*pushPlan, error) {
	p := &pushPlan{key: msg.GetIdempotencyKey(), now: time.Now()}
	if p.key == "" {
		return p, nil
	}
	if len(p.key) > MaxIdempotencyKey {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("idempotency_key of %d bytes; at most %d", len(p.key), MaxIdempotencyKey))
	}
	p.digest = pushDigest(msg)
	a, ok, err := s.store.FirstPush(ctx, msg.GetFeatureView(), p.key)
	if err != nil {
		return nil, rpcerr.Error(ctx, err)
	}
	if ok {
		if a.Digest != p.digest {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("idempotency_key %q was used at %s for other rows of %s: use a new key for a new push", p.key, a.At.Format(time.RFC3339), msg.GetFeatureView()))
		}
		p.first = &a
	}
	return p, nil
}

// pushDigest identifies a push's view and rows, whatever order protobuf
// writes map entries in.
func pushDigest(msg *featurestorev1.PushRequest) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&featurestorev1.PushRequest{FeatureView: msg.GetFeatureView(), Rows: msg.GetRows()})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// storeOnce stores a push's rows exactly once: a push repeating a first
// attempt that stored them stores nothing (replayed); a first attempt is
// recorded before its rows are inserted; and an insert that fails on a
// broken connection, after which the rows may or may not be stored, looks
// for them before trying again.
func (s *Server) storeOnce(ctx context.Context, p *pushPlan, view string, rows int, insert func() error, stored func() (uint64, error)) (replayed bool, err error) {
	if p.first != nil {
		n, err := stored()
		if err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	} else if p.key != "" {
		if err := s.store.RecordPush(ctx, view, p.key, offline.PushAttempt{Created: p.now.Unix(), Rows: int64(rows), Digest: p.digest}); err != nil {
			return false, err
		}
	}
	for attempt := 1; ; attempt++ {
		err := insert()
		if err == nil || !offline.IsConnectionError(err) || attempt == pushAttempts || ctx.Err() != nil {
			return false, err
		}
		n, serr := stored()
		if serr != nil {
			return false, err
		}
		if n > 0 {
			s.log.Info("a push whose connection broke had stored its rows", "view", view, "rows", rows)
			return false, nil
		}
		s.log.Info("a push whose connection broke stored nothing; trying again", "view", view, "attempt", attempt, "err", err)
	}
}
