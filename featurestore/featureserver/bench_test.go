package featureserver_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// BenchmarkGetOnlineFeaturesHandler is the handler alone (no network): 20
// features of rows entity rows, every key held by the tier.
func BenchmarkGetOnlineFeaturesHandler(b *testing.B) {
	var feats []string
	for i := range 20 {
		feats = append(feats, fmt.Sprintf("      - {name: f%d, type: float64}", i))
	}
	e := newEnv(b, "entities:\n  - {name: customer, join_key: customer_id, type: string}\nfeature_views:\n  - name: wide\n    entities: [customer]\n    features:\n"+strings.Join(feats, "\n")+"\n")
	at := time.Now().Add(-time.Minute)
	var pushRows []*featurestorev1.PushRow
	for k := range 100 {
		v := vals{"customer_id": str(fmt.Sprintf("c%d", k))}
		for i := range 20 {
			v[fmt.Sprintf("f%d", i)] = f64(float64(k*i) + 0.5)
		}
		pushRows = append(pushRows, pushRow(at, v))
	}
	if err := push(e.ctx, e.srv, "wide", pushRows...); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			req := &featurestorev1.GetOnlineFeaturesRequest{Features: refs("wide:*")}
			for k := range n {
				req.Entities = append(req.Entities, row(vals{"customer_id": str(fmt.Sprintf("c%d", k))}))
			}
			// Warm the tier (pushed keys are read through once).
			if _, err := e.srv.GetOnlineFeatures(e.ctx, connect.NewRequest(req)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := e.srv.GetOnlineFeatures(e.ctx, connect.NewRequest(req))
				if err != nil {
					b.Fatal(err)
				}
				if resp.Msg.GetRows()[n-1].GetValues()[19].GetStatus() != present {
					b.Fatal("not present")
				}
			}
		})
	}
}
