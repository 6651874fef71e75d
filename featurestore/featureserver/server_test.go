package featureserver_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/featureserver"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// dsn is this test binary's private ClickHouse; every test works in a
// database of its own.
var dsn string

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m, &dsn)) }

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: customer_stats
    entities: [customer]
    ttl: 1h
    description: orders and spend
    tags: {team: crm}
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
  - name: affinity
    entities: [customer, product]
    ttl: 0
    features:
      - {name: score, type: float32}
feature_services:
  - name: svc
    description: everything
    features: ["customer_stats:*", "affinity:score"]
`

// env is one database with defs applied and a server over it.
type env struct {
	t     testing.TB
	store *offline.Store
	db    string
	srv   *featureserver.Server
	ctx   context.Context
}

func parse(t testing.TB, yaml string) *definitions.Repo {
	t.Helper()
	repo, err := definitions.Parse(map[string][]byte{"defs.yaml": []byte(yaml)})
	if err != nil {
		t.Fatalf("parse definitions: %v", err)
	}
	return repo
}

// newEnv opens a fresh database, applies yaml (none when empty) and
// starts a server on it.
func newEnv(t testing.TB, yaml string) *env {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "fs_" + hex.EncodeToString(b)
	ctx := context.Background()
	store, err := offline.Open(ctx, dsn, offline.Options{Database: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		_ = store.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		store.Close()
	})
	e := &env{t: t, store: store, db: db, ctx: ctx}
	if yaml != "" {
		e.apply(yaml)
	}
	e.srv = e.replica()
	return e
}

func (e *env) apply(yaml string) {
	e.t.Helper()
	if _, _, err := e.store.Apply(e.ctx, parse(e.t, yaml), "test"); err != nil {
		e.t.Fatalf("apply: %v", err)
	}
}

// replica is another server process on the same ClickHouse: its online
// tier starts empty.
func (e *env) replica() *featureserver.Server {
	e.t.Helper()
	online := onlinestore.New(e.store, onlinetier.New(onlinetier.Options{BudgetBytes: 16 << 20}), onlinestore.Options{})
	srv, err := featureserver.New(e.ctx, e.store, online, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatalf("featureserver.New: %v", err)
	}
	return srv
}

// count is the number of stored rows of a view.
func (e *env) count(view string) uint64 {
	e.t.Helper()
	v, ok := e.srv.Definitions().Repo.View(view)
	if !ok {
		e.t.Fatalf("no view %q", view)
	}
	var n uint64
	if err := e.store.Conn().QueryRow(e.ctx, "SELECT count() FROM "+e.store.TableOf(v)).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func str(s string) *featurestorev1.Value {
	return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
}

func i64(n int64) *featurestorev1.Value {
	return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
}

func f64(f float64) *featurestorev1.Value {
	return &featurestorev1.Value{Kind: &featurestorev1.Value_Float64Value{Float64Value: f}}
}

func f32(f float32) *featurestorev1.Value {
	return &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: f}}
}

type vals = map[string]*featurestorev1.Value

func refs(r ...string) *featurestorev1.GetOnlineFeaturesRequest_FeatureRefs {
	return &featurestorev1.GetOnlineFeaturesRequest_FeatureRefs{FeatureRefs: &featurestorev1.FeatureRefs{Refs: r}}
}

func row(keys vals) *featurestorev1.EntityRow { return &featurestorev1.EntityRow{Keys: keys} }

// push pushes rows of view through srv.
func push(ctx context.Context, srv *featureserver.Server, view string, rows ...*featurestorev1.PushRow) error {
	_, err := srv.Push(ctx, connect.NewRequest(&featurestorev1.PushRequest{FeatureView: view, Rows: rows}))
	return err
}

func pushRow(at time.Time, v vals) *featurestorev1.PushRow {
	return &featurestorev1.PushRow{Values: v, EventTimestamp: timestamppb.New(at)}
}

// get reads one feature of one entity row through srv.
func get(t *testing.T, srv *featureserver.Server, ref string, keys vals) *featurestorev1.FeatureValue {
	t.Helper()
	resp, err := srv.GetOnlineFeatures(context.Background(), connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: refs(ref), Entities: []*featurestorev1.EntityRow{row(keys)},
	}))
	if err != nil {
		t.Fatalf("get %s %v: %v", ref, keys, err)
	}
	return resp.Msg.GetRows()[0].GetValues()[0]
}

const (
	present  = featurestorev1.FeatureStatus_FEATURE_STATUS_PRESENT
	notFound = featurestorev1.FeatureStatus_FEATURE_STATUS_NOT_FOUND
	tooOld   = featurestorev1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE
)

// wantCode checks an error's code and that its message names what it must.
func wantCode(t *testing.T, err error, code connect.Code, names ...string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Fatalf("error %v does not name %s", err, n)
		}
	}
}

func TestDescribeDefinitions(t *testing.T) {
	e := newEnv(t, defs)
	ctx := e.ctx
	list, err := e.srv.ListFeatureViews(ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list.Msg.GetFeatureViews() {
		names = append(names, v.GetName())
	}
	if strings.Join(names, ",") != "customer_stats,affinity" || list.Msg.GetDefinitionsVersion() != 1 {
		t.Fatalf("views %v at version %d", names, list.Msg.GetDefinitionsVersion())
	}
	resp, err := e.srv.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "affinity"}))
	if err != nil {
		t.Fatal(err)
	}
	want := &featurestorev1.FeatureView{
		Name: "affinity", Ttl: resp.Msg.GetFeatureView().GetTtl(), Table: e.store.Database() + ".fv_affinity",
		TimestampField: "event_ts", CreatedTimestampField: "created_ts",
		Entities: []*featurestorev1.Entity{
			{Name: "customer", JoinKey: "customer_id", Type: featurestorev1.ValueType_VALUE_TYPE_STRING},
			{Name: "product", JoinKey: "product_id", Type: featurestorev1.ValueType_VALUE_TYPE_INT64},
		},
		Features: []*featurestorev1.Feature{{Name: "score", Type: featurestorev1.ValueType_VALUE_TYPE_FLOAT32}},
	}
	if got := resp.Msg.GetFeatureView(); !proto.Equal(got, want) || got.GetTtl().AsDuration() != 0 {
		t.Fatalf("affinity:\n got  %v\n want %v", got, want)
	}
	cs, err := e.srv.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "customer_stats"}))
	if err != nil {
		t.Fatal(err)
	}
	if v := cs.Msg.GetFeatureView(); v.GetTtl().AsDuration() != time.Hour || v.GetTags()["team"] != "crm" || v.GetDescription() != "orders and spend" || len(v.GetFeatures()) != 3 {
		t.Fatalf("customer_stats: %v", v)
	}
	_, err = e.srv.GetFeatureView(ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "nope"}))
	wantCode(t, err, connect.CodeNotFound, `"nope"`)

	svcs, err := e.srv.ListFeatureServices(ctx, connect.NewRequest(&featurestorev1.ListFeatureServicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	wantSvc := []*featurestorev1.FeatureServiceDefinition{{Name: "svc", Description: "everything", FeatureRefs: []string{"customer_stats:*", "affinity:score"}}}
	if got := svcs.Msg.GetFeatureServices(); len(got) != 1 || !proto.Equal(got[0], wantSvc[0]) {
		t.Fatalf("services %v, want %v", got, wantSvc)
	}
}

func TestNothingApplied(t *testing.T) {
	e := newEnv(t, "")
	list, err := e.srv.ListFeatureViews(e.ctx, connect.NewRequest(&featurestorev1.ListFeatureViewsRequest{}))
	if err != nil || len(list.Msg.GetFeatureViews()) != 0 || list.Msg.GetDefinitionsVersion() != 0 {
		t.Fatalf("%v %v", list, err)
	}
	_, err = e.srv.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders")}))
	wantCode(t, err, connect.CodeInvalidArgument, `customer_stats`)
	wantCode(t, push(e.ctx, e.srv, "customer_stats", pushRow(time.Now(), vals{"customer_id": str("c")})), connect.CodeInvalidArgument, `"customer_stats"`)
}

func TestGetOnlineFeaturesRefusesBadRequests(t *testing.T) {
	e := newEnv(t, defs)
	good := row(vals{"customer_id": str("c1"), "product_id": i64(1)})
	svc := &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "svc"}
	cases := []struct {
		name  string
		req   *featurestorev1.GetOnlineFeaturesRequest
		code  connect.Code
		names []string
	}{
		{"unknown view", &featurestorev1.GetOnlineFeaturesRequest{Features: refs("nope:orders"), Entities: []*featurestorev1.EntityRow{good}}, connect.CodeInvalidArgument, []string{`nope`}},
		{"unknown feature", &featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders", "customer_stats:nope"), Entities: []*featurestorev1.EntityRow{good}}, connect.CodeInvalidArgument, []string{`customer_stats:nope`}},
		{"unknown service", &featurestorev1.GetOnlineFeaturesRequest{Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "nope"}}, connect.CodeInvalidArgument, []string{`"nope"`}},
		{"no refs", &featurestorev1.GetOnlineFeaturesRequest{Features: refs(), Entities: []*featurestorev1.EntityRow{good}}, connect.CodeInvalidArgument, nil},
		{"no features at all", &featurestorev1.GetOnlineFeaturesRequest{Entities: []*featurestorev1.EntityRow{good}}, connect.CodeInvalidArgument, nil},
		{"missing join key", &featurestorev1.GetOnlineFeaturesRequest{Features: svc, Entities: []*featurestorev1.EntityRow{good, row(vals{"customer_id": str("c1")})}}, connect.CodeInvalidArgument, []string{`"product_id"`, "entity row 1"}},
		{"text for an int64 key", &featurestorev1.GetOnlineFeaturesRequest{Features: svc, Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": str("c1"), "product_id": str("p1")})}}, connect.CodeInvalidArgument, []string{`"product_id"`, `"p1"`}},
		{"int64 for a string key", &featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders"), Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": i64(1)})}}, connect.CodeInvalidArgument, []string{`"customer_id"`}},
		{"float key", &featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders"), Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": f64(1)})}}, connect.CodeInvalidArgument, []string{`"customer_id"`}},
		{"null key", &featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders"), Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": {}})}}, connect.CodeInvalidArgument, []string{`"customer_id"`}},
		{"too many rows", &featurestorev1.GetOnlineFeaturesRequest{Features: svc, Entities: make([]*featurestorev1.EntityRow, featureserver.MaxEntityRows+1)}, connect.CodeResourceExhausted, []string{"10000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.srv.GetOnlineFeatures(e.ctx, connect.NewRequest(c.req))
			wantCode(t, err, c.code, c.names...)
		})
	}
	// The limit itself is fine.
	max := make([]*featurestorev1.EntityRow, featureserver.MaxEntityRows)
	for i := range max {
		max[i] = row(vals{"customer_id": str(fmt.Sprint("c", i))})
	}
	resp, err := e.srv.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{Features: refs("customer_stats:orders"), Entities: max}))
	if err != nil || len(resp.Msg.GetRows()) != featureserver.MaxEntityRows || resp.Msg.GetRows()[9999].GetValues()[0].GetStatus() != notFound {
		t.Fatalf("%d rows: %v", featureserver.MaxEntityRows, err)
	}
}

func TestPushThenGet(t *testing.T) {
	e := newEnv(t, defs)
	ctx := e.ctx
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	c1 := vals{"customer_id": str("c1")}
	// Read c1 first, so its absence is cached, then push over it.
	if v := get(t, e.srv, "customer_stats:orders", c1); v.GetStatus() != notFound || v.GetEventTimestamp() != nil {
		t.Fatalf("before push: %v", v)
	}
	if err := push(ctx, e.srv, "customer_stats", pushRow(at, vals{"customer_id": str("c1"), "orders": i64(7), "spend": f64(2.5)})); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, srv *featureserver.Server) {
		resp, err := srv.GetOnlineFeatures(ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: refs("customer_stats:orders", "customer_stats:spend", "customer_stats:segment"), FullFeatureNames: true,
			Entities: []*featurestorev1.EntityRow{row(c1), row(vals{"customer_id": str("c2")})},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(resp.Msg.GetFeatureNames(), ","); got != "customer_stats__orders,customer_stats__spend,customer_stats__segment" {
			t.Fatalf("names %s", got)
		}
		want := []*featurestorev1.FeatureValue{
			{Status: present, Value: i64(7), EventTimestamp: timestamppb.New(at)},
			{Status: present, Value: f64(2.5), EventTimestamp: timestamppb.New(at)},
			{Status: present, EventTimestamp: timestamppb.New(at)}, // pushed as null
		}
		for j, w := range want {
			if got := resp.Msg.GetRows()[0].GetValues()[j]; !proto.Equal(got, w) {
				t.Fatalf("c1 feature %d: %v, want %v", j, got, w)
			}
		}
		for _, v := range resp.Msg.GetRows()[1].GetValues() {
			if !proto.Equal(v, &featurestorev1.FeatureValue{Status: notFound}) {
				t.Fatalf("c2: %v", v)
			}
		}
	}
	t.Run("same server", func(t *testing.T) { check(t, e.srv) })
	t.Run("fresh server", func(t *testing.T) { check(t, e.replica()) })
	if n := e.count("customer_stats"); n != 1 {
		t.Fatalf("%d rows stored, want 1", n)
	}
}

func TestOlderPushDoesNotReplaceNewer(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	key := vals{"customer_id": str("c1")}
	at := func(d time.Duration, orders int64) *featurestorev1.PushRow {
		return pushRow(now.Add(d), vals{"customer_id": str("c1"), "orders": i64(orders)})
	}
	if err := push(e.ctx, e.srv, "customer_stats", at(-time.Minute, 2)); err != nil {
		t.Fatal(err)
	}
	if err := push(e.ctx, e.srv, "customer_stats", at(-2*time.Minute, 1)); err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*featureserver.Server{"same server": e.srv, "fresh server": e.replica()} {
		if v := get(t, srv, "customer_stats:orders", key); v.GetValue().GetInt64Value() != 2 || !v.GetEventTimestamp().AsTime().Equal(now.Add(-time.Minute)) {
			t.Fatalf("%s: %v, want the newer row", name, v)
		}
	}
	// On the same event time, the later created time wins.
	tie := func(created time.Duration, orders int64) *featurestorev1.PushRow {
		r := at(-time.Minute, orders)
		r.CreatedTimestamp = timestamppb.New(now.Add(created))
		return r
	}
	if err := push(e.ctx, e.srv, "customer_stats", tie(time.Hour, 3), tie(0, 4)); err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*featureserver.Server{"same server": e.srv, "fresh server": e.replica()} {
		if v := get(t, srv, "customer_stats:orders", key); v.GetValue().GetInt64Value() != 3 {
			t.Fatalf("%s: %v, want the row created last", name, v)
		}
	}
}

// TestOlderPushThroughAColdReplica: a server that does not hold a key (a
// replica, or after a restart or an eviction) and receives an older push
// must keep answering the newer row stored in ClickHouse.
func TestOlderPushThroughAColdReplica(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	key := vals{"customer_id": str("c1")}
	if err := push(e.ctx, e.srv, "customer_stats", pushRow(now.Add(-time.Minute), vals{"customer_id": str("c1"), "orders": i64(2)})); err != nil {
		t.Fatal(err)
	}
	cold := e.replica()
	if err := push(e.ctx, cold, "customer_stats", pushRow(now.Add(-2*time.Minute), vals{"customer_id": str("c1"), "orders": i64(1)})); err != nil {
		t.Fatal(err)
	}
	if v := get(t, cold, "customer_stats:orders", key); v.GetValue().GetInt64Value() != 2 {
		t.Fatalf("the cold replica answers the older pushed row %v instead of the newer stored one", v)
	}
}

// TestFuturePush: a row whose event time is ahead of the clock is not the
// latest row "now" by the point-in-time rule; whatever the server does with
// it, the server that took the push and a fresh one must agree.
func TestFuturePush(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	key := vals{"customer_id": str("c1")}
	if err := push(e.ctx, e.srv, "customer_stats", pushRow(now.Add(-time.Minute), vals{"customer_id": str("c1"), "orders": i64(1)})); err != nil {
		t.Fatal(err)
	}
	err := push(e.ctx, e.srv, "customer_stats", pushRow(now.Add(time.Hour), vals{"customer_id": str("c1"), "orders": i64(2)}))
	if err != nil {
		wantCode(t, err, connect.CodeInvalidArgument, "event_timestamp")
		return
	}
	same, fresh := get(t, e.srv, "customer_stats:orders", key), get(t, e.replica(), "customer_stats:orders", key)
	if !proto.Equal(same, fresh) {
		t.Fatalf("after a push dated an hour ahead, the server that took it answers %v, a fresh server %v", same, fresh)
	}
}

// TestClickHouseUnavailable: with the store's connection gone, a push and
// a read of a key the tier does not hold are Unavailable, a key the tier
// holds is still answered, and a request out of time is DeadlineExceeded.
func TestClickHouseUnavailable(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	if err := push(e.ctx, e.srv, "customer_stats", pushRow(now, vals{"customer_id": str("c1"), "orders": i64(1)})); err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(e.ctx, now.Add(-time.Second))
	defer cancel()
	wantCode(t, push(expired, e.srv, "customer_stats", pushRow(now, vals{"customer_id": str("c2"), "orders": i64(1)})), connect.CodeDeadlineExceeded)
	_, err := e.srv.GetOnlineFeatures(expired, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: refs("customer_stats:orders"), Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": str("c3")})},
	}))
	wantCode(t, err, connect.CodeDeadlineExceeded)

	// A second handle on the same database, closed under its server.
	down, err := offline.Open(e.ctx, dsn, offline.Options{Database: e.db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	online := onlinestore.New(down, onlinetier.New(onlinetier.Options{}), onlinestore.Options{})
	srv, err := featureserver.New(e.ctx, down, online, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, srv, "customer_stats:orders", vals{"customer_id": str("c1")}); v.GetValue().GetInt64Value() != 1 {
		t.Fatalf("c1: %v", v)
	}
	down.Close()
	wantCode(t, push(e.ctx, srv, "customer_stats", pushRow(now, vals{"customer_id": str("c4"), "orders": i64(1)})), connect.CodeUnavailable)
	_, err = srv.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: refs("customer_stats:orders"), Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": str("c5")})},
	}))
	wantCode(t, err, connect.CodeUnavailable)
	if v := get(t, srv, "customer_stats:orders", vals{"customer_id": str("c1")}); v.GetValue().GetInt64Value() != 1 {
		t.Fatalf("cached c1 while ClickHouse is unreachable: %v", v)
	}
	if n := e.count("customer_stats"); n != 1 {
		t.Fatalf("%d rows stored, want 1", n)
	}
}

func TestTTL(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	old := now.Add(-2 * time.Hour) // customer_stats' ttl is 1h
	if err := push(e.ctx, e.srv, "customer_stats", pushRow(old, vals{"customer_id": str("old"), "orders": i64(5)})); err != nil {
		t.Fatal(err)
	}
	// affinity has no ttl: an old row is still served.
	if err := push(e.ctx, e.srv, "affinity", pushRow(old, vals{"customer_id": str("old"), "product_id": i64(1), "score": f32(0.5)})); err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*featureserver.Server{"same server": e.srv, "fresh server": e.replica()} {
		resp, err := srv.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: &featurestorev1.GetOnlineFeaturesRequest_FeatureService{FeatureService: "svc"},
			Entities: []*featurestorev1.EntityRow{row(vals{"customer_id": str("old"), "product_id": i64(1)})},
		}))
		if err != nil {
			t.Fatal(err)
		}
		got := resp.Msg.GetRows()[0].GetValues()
		stale := &featurestorev1.FeatureValue{Status: tooOld, EventTimestamp: timestamppb.New(old)}
		want := []*featurestorev1.FeatureValue{stale, stale, stale, {Status: present, Value: f32(0.5), EventTimestamp: timestamppb.New(old)}}
		for j := range want {
			if !proto.Equal(got[j], want[j]) {
				t.Fatalf("%s: feature %d = %v, want %v", name, j, got[j], want[j])
			}
		}
	}
}

func TestInt64BeyondFloatPrecision(t *testing.T) {
	e := newEnv(t, defs)
	const big = 1<<53 + 1 // a float64 would round it to 1<<53
	now := time.Now().UTC().Truncate(time.Second)
	if err := push(e.ctx, e.srv, "customer_stats", pushRow(now, vals{"customer_id": str("c1"), "orders": i64(big)})); err != nil {
		t.Fatal(err)
	}
	if err := push(e.ctx, e.srv, "affinity", pushRow(now, vals{"customer_id": str("c1"), "product_id": i64(big), "score": f32(1)})); err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*featureserver.Server{"same server": e.srv, "fresh server": e.replica()} {
		if v := get(t, srv, "customer_stats:orders", vals{"customer_id": str("c1")}); v.GetValue().GetInt64Value() != big {
			t.Fatalf("%s: value %v, want %d", name, v, int64(big))
		}
		if v := get(t, srv, "affinity:score", vals{"customer_id": str("c1"), "product_id": i64(big)}); v.GetStatus() != present {
			t.Fatalf("%s: key %d: %v", name, int64(big), v)
		}
		if v := get(t, srv, "affinity:score", vals{"customer_id": str("c1"), "product_id": i64(big - 1)}); v.GetStatus() != notFound {
			t.Fatalf("%s: key %d matched the row of %d: %v", name, int64(big-1), int64(big), v)
		}
	}
	// Text clients may send an int64 key as its decimal text.
	if v := get(t, e.srv, "affinity:score", vals{"customer_id": str("c1"), "product_id": str("9007199254740993")}); v.GetStatus() != present {
		t.Fatalf("int64 key as text: %v", v)
	}
	// An int32 key value is widened to the int64 key.
	if v := get(t, e.srv, "affinity:score", vals{"customer_id": str("c1"), "product_id": {Kind: &featurestorev1.Value_Int32Value{Int32Value: 7}}}); v.GetStatus() != notFound {
		t.Fatalf("int32 key: %v", v)
	}
}

const allTypes = `entities: [{name: k, join_key: k, type: int64}]
feature_views:
  - name: all
    entities: [k]
    features:
      - {name: i32, type: int32}
      - {name: i64, type: int64}
      - {name: f32, type: float32}
      - {name: f64, type: float64}
      - {name: s, type: string}
      - {name: b, type: bool}
      - {name: ts, type: timestamp}
      - {name: af, type: "array<float32>"}
      - {name: ai, type: "array<int64>"}
      - {name: as, type: "array<string>"}
`

func TestEveryTypeRoundTrips(t *testing.T) {
	e := newEnv(t, allTypes)
	now := time.Now().UTC().Truncate(time.Second)
	in := vals{
		"i32": {Kind: &featurestorev1.Value_Int32Value{Int32Value: -7}},
		"i64": i64(-1 << 62),
		"f32": f32(0.25),
		"f64": f64(1e21),
		"s":   str("héllo, \"world\"\n"),
		"b":   {Kind: &featurestorev1.Value_BoolValue{BoolValue: true}},
		"ts":  {Kind: &featurestorev1.Value_TimestampValue{TimestampValue: timestamppb.New(time.Date(2024, 2, 29, 12, 0, 1, 0, time.UTC))}},
		"af":  {Kind: &featurestorev1.Value_Float32ListValue{Float32ListValue: &featurestorev1.Float32List{Values: []float32{1, -2.5}}}},
		"ai":  {Kind: &featurestorev1.Value_Int64ListValue{Int64ListValue: &featurestorev1.Int64List{Values: []int64{1<<53 + 1, -1}}}},
		"as":  {Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{"a", "", "c"}}}},
	}
	pushed := vals{"k": i64(1)}
	for k, v := range in {
		pushed[k] = v
	}
	if err := push(e.ctx, e.srv, "all", pushRow(now, pushed)); err != nil {
		t.Fatal(err)
	}
	names := []string{"i32", "i64", "f32", "f64", "s", "b", "ts", "af", "ai", "as"}
	var rs []string
	for _, n := range names {
		rs = append(rs, "all:"+n)
	}
	for name, srv := range map[string]*featureserver.Server{"same server": e.srv, "fresh server": e.replica()} {
		resp, err := srv.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
			Features: refs(rs...), Entities: []*featurestorev1.EntityRow{row(vals{"k": i64(1)})},
		}))
		if err != nil {
			t.Fatal(err)
		}
		for j, n := range names {
			got := resp.Msg.GetRows()[0].GetValues()[j]
			if got.GetStatus() != present || !proto.Equal(got.GetValue(), in[n]) {
				t.Errorf("%s: %s = %v, want %v", name, n, got, in[n])
			}
		}
	}
}

func TestPushRefusesBadRows(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	ok := vals{"customer_id": str("c1"), "orders": i64(1)}
	many := make([]*featurestorev1.PushRow, featureserver.MaxEntityRows+1)
	for i := range many {
		many[i] = pushRow(now, ok)
	}
	cases := []struct {
		name  string
		view  string
		rows  []*featurestorev1.PushRow
		code  connect.Code
		names []string
	}{
		{"unknown view", "nope", []*featurestorev1.PushRow{pushRow(now, ok)}, connect.CodeInvalidArgument, []string{`"nope"`}},
		{"unknown column", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "oops": i64(1)})}, connect.CodeInvalidArgument, []string{`"oops"`}},
		{"event time as a value", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "event_ts": i64(1)})}, connect.CodeInvalidArgument, []string{`"event_ts"`}},
		{"created time as a value", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "created_ts": i64(1)})}, connect.CodeInvalidArgument, []string{`"created_ts"`}},
		{"string for int64", "customer_stats", []*featurestorev1.PushRow{pushRow(now, ok), pushRow(now, vals{"customer_id": str("c1"), "orders": str("many")})}, connect.CodeInvalidArgument, []string{"row 1", `"orders"`}},
		{"float for int64", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "orders": f64(1.5)})}, connect.CodeInvalidArgument, []string{`"orders"`}},
		{"list for a scalar", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "segment": {Kind: &featurestorev1.Value_StringListValue{StringListValue: &featurestorev1.StringList{Values: []string{"a"}}}}})}, connect.CodeInvalidArgument, []string{`"segment"`}},
		{"missing key", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"orders": i64(1)})}, connect.CodeInvalidArgument, []string{`"customer_id"`}},
		{"wrong key type", "affinity", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "product_id": str("p")})}, connect.CodeInvalidArgument, []string{`"product_id"`}},
		{"null key", "customer_stats", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": {}})}, connect.CodeInvalidArgument, []string{`"customer_id"`}},
		{"no event time", "customer_stats", []*featurestorev1.PushRow{pushRow(now, ok), {Values: ok}}, connect.CodeInvalidArgument, []string{"row 1", "event_timestamp"}},
		{"too many rows", "customer_stats", many, connect.CodeResourceExhausted, []string{"10000"}},
		{"event time in 1900", "customer_stats", []*featurestorev1.PushRow{pushRow(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), ok)}, connect.CodeInvalidArgument, []string{"row 0", "event_timestamp", "1900"}},
		{"event time a second before 1970", "customer_stats", []*featurestorev1.PushRow{pushRow(time.Unix(-1, 0), ok)}, connect.CodeInvalidArgument, []string{"event_timestamp", "1969"}},
		{"created time in 1900", "customer_stats", []*featurestorev1.PushRow{{Values: ok, EventTimestamp: timestamppb.New(now), CreatedTimestamp: timestamppb.New(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC))}}, connect.CodeInvalidArgument, []string{"created_timestamp"}},
		{"float32 overflow", "affinity", []*featurestorev1.PushRow{pushRow(now, vals{"customer_id": str("c1"), "product_id": i64(1), "score": f64(1e300)})}, connect.CodeInvalidArgument, []string{`"score"`, "float32"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantCode(t, push(e.ctx, e.srv, c.view, c.rows...), c.code, c.names...)
		})
	}
	for _, view := range []string{"customer_stats", "affinity"} {
		if n := e.count(view); n != 0 {
			t.Fatalf("refused pushes stored %d rows in %s", n, view)
		}
	}
	// Nor did the tier take the good first rows of a refused push.
	if v := get(t, e.srv, "customer_stats:orders", vals{"customer_id": str("c1")}); v.GetStatus() != notFound {
		t.Fatalf("c1 after refused pushes: %v", v)
	}
	// An empty push stores nothing and is fine.
	if err := push(e.ctx, e.srv, "customer_stats"); err != nil {
		t.Fatalf("empty push: %v", err)
	}
}

func TestWatchDefinitionsPicksUpNewViews(t *testing.T) {
	e := newEnv(t, defs)
	ctx, cancel := context.WithCancel(e.ctx)
	stopped := make(chan struct{})
	go func() { e.srv.WatchDefinitions(ctx, 20*time.Millisecond); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	// A request in flight keeps the snapshot it started with.
	before := e.srv.Definitions()
	e.apply(strings.Replace(defs, "feature_services:", `  - name: fresh
    entities: [customer]
    features: [{name: x, type: float64}]
feature_services:`, 1))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := e.srv.GetFeatureView(e.ctx, connect.NewRequest(&featurestorev1.GetFeatureViewRequest{Name: "fresh"}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the new view was not picked up within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e.srv.Definitions().Version != 2 || before.Version != 1 {
		t.Fatalf("versions %d -> %d", before.Version, e.srv.Definitions().Version)
	}
	if _, ok := before.Repo.View("fresh"); ok {
		t.Fatal("the old snapshot changed")
	}
	// The new view can be pushed to and read at once.
	now := time.Now().UTC().Truncate(time.Second)
	if err := push(e.ctx, e.srv, "fresh", pushRow(now, vals{"customer_id": str("c1"), "x": f64(3)})); err != nil {
		t.Fatal(err)
	}
	if v := get(t, e.srv, "fresh:x", vals{"customer_id": str("c1")}); v.GetValue().GetFloat64Value() != 3 {
		t.Fatalf("fresh:x = %v", v)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchDefinitions did not stop with its context")
	}
}

// TestPushTakesDecimalTextForInt64Keys: like GetOnlineFeatures, Push reads
// an int64 join key sent as decimal text as that integer, exactly; other
// text is refused naming the key.
func TestPushTakesDecimalTextForInt64Keys(t *testing.T) {
	e := newEnv(t, defs)
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	big := int64(1<<53 + 1)
	if err := push(e.ctx, e.srv, "affinity", pushRow(at, vals{"customer_id": str("c1"), "product_id": str("9007199254740993"), "score": f32(0.5)})); err != nil {
		t.Fatal(err)
	}
	if v := get(t, e.replica(), "affinity:score", vals{"customer_id": str("c1"), "product_id": i64(big)}); v.GetStatus() != present || v.GetValue().GetFloat32Value() != 0.5 {
		t.Fatalf("pushed with a text key, read with the integer: %v", v)
	}
	err := push(e.ctx, e.srv, "affinity", pushRow(at, vals{"customer_id": str("c1"), "product_id": str("12x"), "score": f32(0.5)}))
	wantCode(t, err, connect.CodeInvalidArgument, "product_id")
}

// TestGetOnlineFeaturesManyUncachedKeys: the documented limit of 10,000
// entity rows, none of them in the tier, and keys of 300 KB are answered
// exactly (the read-through sends keys as data, not as query text).
func TestGetOnlineFeaturesManyUncachedKeys(t *testing.T) {
	e := newEnv(t, defs)
	now := time.Now().UTC().Truncate(time.Second)
	big := strings.Repeat("k", 300<<10)
	var rows []*featurestorev1.PushRow
	for i := range 50 {
		rows = append(rows, pushRow(now, vals{"customer_id": str(fmt.Sprintf("c%05d", i*7)), "orders": i64(int64(i * 7))}))
	}
	rows = append(rows, pushRow(now, vals{"customer_id": str(big), "orders": i64(-1)}))
	if err := push(e.ctx, e.srv, "customer_stats", rows...); err != nil {
		t.Fatal(err)
	}
	// A replica with a cold tier reads every key through.
	cold := e.replica()
	entities := make([]*featurestorev1.EntityRow, featureserver.MaxEntityRows)
	for i := range entities {
		entities[i] = row(vals{"customer_id": str(fmt.Sprintf("c%05d", i))})
	}
	entities[len(entities)-1] = row(vals{"customer_id": str(big)})
	resp, err := cold.GetOnlineFeatures(e.ctx, connect.NewRequest(&featurestorev1.GetOnlineFeaturesRequest{
		Features: refs("customer_stats:orders"), Entities: entities,
	}))
	if err != nil {
		t.Fatalf("%d uncached keys: %v", len(entities), err)
	}
	for i, r := range resp.Msg.GetRows() {
		v := r.GetValues()[0]
		switch {
		case i == len(entities)-1:
			if v.GetStatus() != present || v.GetValue().GetInt64Value() != -1 {
				t.Fatalf("the 300 KB key: %v", v)
			}
		case i%7 == 0 && i/7 < 50:
			if v.GetStatus() != present || v.GetValue().GetInt64Value() != int64(i) {
				t.Fatalf("row %d: %v, want %d", i, v, i)
			}
		default:
			if v.GetStatus() != notFound {
				t.Fatalf("row %d: %v, want NOT_FOUND", i, v)
			}
		}
	}
}

// TestPushIdempotencyKey: a push retried with its idempotency key stores
// its rows once, on whichever replica the retry lands, and answers
// replayed; the same key with other rows is refused.
func TestPushIdempotencyKey(t *testing.T) {
	e := newEnv(t, defs)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	req := func(key string, orders int64) *connect.Request[featurestorev1.PushRequest] {
		return connect.NewRequest(&featurestorev1.PushRequest{FeatureView: "customer_stats", IdempotencyKey: key, Rows: []*featurestorev1.PushRow{
			pushRow(at, vals{"customer_id": str("c1"), "orders": i64(orders)}),
			pushRow(at, vals{"customer_id": str("c2"), "orders": i64(orders + 1)}),
		}})
	}
	first, err := e.srv.Push(e.ctx, req("k1", 5))
	if err != nil || first.Msg.GetReplayed() || first.Msg.GetRowsStored() != 2 {
		t.Fatalf("first push: %v %v", first, err)
	}
	time.Sleep(1100 * time.Millisecond) // a retry comes later: its own created time would differ
	for _, srv := range []*featureserver.Server{e.srv, e.replica()} {
		again, err := srv.Push(e.ctx, req("k1", 5))
		if err != nil || !again.Msg.GetReplayed() || again.Msg.GetRowsStored() != 2 {
			t.Fatalf("retry: %v %v, want replayed", again, err)
		}
	}
	if n := e.count("customer_stats"); n != 2 {
		t.Fatalf("%d rows stored after retries, want 2", n)
	}
	wantCode(t, func() error { _, err := e.srv.Push(e.ctx, req("k1", 6)); return err }(), connect.CodeInvalidArgument, `"k1"`)
	wantCode(t, func() error { _, err := e.srv.Push(e.ctx, req(strings.Repeat("k", 129), 6)); return err }(), connect.CodeInvalidArgument, "idempotency_key")
	// Another key is another push.
	if r, err := e.srv.Push(e.ctx, req("k2", 6)); err != nil || r.Msg.GetReplayed() {
		t.Fatalf("new key: %v %v", r, err)
	}
	if n := e.count("customer_stats"); n != 4 {
		t.Fatalf("%d rows stored, want 4", n)
	}
}
