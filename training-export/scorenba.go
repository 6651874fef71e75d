package trainingexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/onlinestore"
	"github.com/tailorhq/tailor/featurestore/onlinetier"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/serving/models"
	"github.com/tailorhq/tailor/serving/nba"
)

// NBARequest describes a batch next-best-action run.
type NBARequest struct {
	Config *nba.Config
	// K is how many products per customer (default 5).
	K int
	// The entity rows, the instant, the output and its compression: as
	// for ScoreRequest.
	EntitiesFile, EntitiesFormat, EntitiesSQL string
	At                                        time.Time
	Out, Format, Compression                  string
	Progress                                  func(stage string, rows int64)
}

// pitFeatures answers the next-best-action service's one feature fetch
// from a point-in-time row instead of the online tier: a feature whose
// view had a row at the instant (within its ttl) is PRESENT, as online,
// and one whose view had none is NOT_FOUND (online it may be
// OUTSIDE_MAX_AGE; the service treats both alike).
type pitFeatures struct {
	values map[string]any  // ref -> value at the instant (nil: null or none)
	found  map[string]bool // view -> it had a row
}

func (p *pitFeatures) Get(_ context.Context, _ *definitions.Repo, refs []definitions.FeatureRef, rows onlinestore.EntityRows) ([][]onlinestore.Result, error) {
	vals := make([]any, len(refs))
	for j, r := range refs {
		vals[j] = p.values[r.String()]
	}
	out := make([][]onlinestore.Result, rows.Len())
	row, err := onlinetier.NewRow(0, 0, vals)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = make([]onlinestore.Result, len(refs))
		for j, r := range refs {
			if p.found[r.View] {
				out[i][j] = onlinestore.Result{Status: onlinestore.Present, Row: row, Index: j, Type: r.Type}
			} else {
				out[i][j].Status = onlinestore.NotFound
			}
		}
	}
	return out, nil
}

// oneRow is a single entity row's join keys.
type oneRow map[string]onlinestore.KeyValue

func (r oneRow) Len() int { return 1 }
func (r oneRow) JoinKey(_ int, key string) (onlinestore.KeyValue, bool) {
	v, ok := r[key]
	return v, ok
}

// ScoreNextBestAction answers the next best action for every entity at
// req.At exactly as the online NextBestAction would at that instant, from
// point-in-time features (as of a snapshot watermark), and writes one row
// per entity: its columns, the products (best first) and their scores, the
// send time, the channel, whether a fallback answered and why, and the
// model versions.
func ScoreNextBestAction(ctx context.Context, store *offline.Store, reg Models, repo *definitions.Repo, req NBARequest) (ScoreResult, error) {
	start := time.Now()
	if req.Out == "" || req.At.IsZero() {
		return ScoreResult{}, errors.New("pass --out FILE and --at TIME")
	}
	outFormat, wopt, err := OutputOptions(req.Out, req.Format, req.Compression)
	if err != nil {
		return ScoreResult{}, err
	}
	snapshot := startWatermark(ctx, store)
	mgr := models.New(reg, func() *definitions.Repo { return repo }, models.Options{Refresh: time.Hour})
	defer mgr.Close()
	feats := &pitFeatures{}
	svc := nba.New(req.Config, mgr, feats, func() *definitions.Repo { return repo })

	// Every feature any part may read.
	var refs []definitions.FeatureRef
	seen := map[string]bool{}
	add := func(rs []definitions.FeatureRef) {
		for _, r := range rs {
			if !seen[r.String()] {
				seen[r.String()] = true
				refs = append(refs, r)
			}
		}
	}
	for _, ref := range []string{req.Config.Models.NextProduct, req.Config.Models.Timing, req.Config.Models.Channel} {
		if m, release, err := mgr.Get(ctx, ref); err == nil {
			add(m.Plan.Refs)
			release()
		}
	}
	var extra []string
	if req.Config.Owned != "" {
		extra = append(extra, req.Config.Owned)
	}
	for _, f := range req.Config.Consent {
		extra = append(extra, f)
	}
	if req.Config.SendHour != "" {
		extra = append(extra, req.Config.SendHour)
	}
	if len(extra) > 0 {
		rs, err := repo.ResolveRefs(extra)
		if err != nil {
			return ScoreResult{}, err
		}
		add(rs)
	}
	if len(refs) == 0 {
		return ScoreResult{}, errors.New("the configured models read no features")
	}
	keys, err := offline.JoinKeys(repo, refs)
	if err != nil {
		return ScoreResult{}, err
	}
	set, err := entitiesAt(ctx, store, ScoreRequest{EntitiesFile: req.EntitiesFile, EntitiesFormat: req.EntitiesFormat, EntitiesSQL: req.EntitiesSQL, At: req.At}, keys)
	if err != nil {
		return ScoreResult{}, err
	}
	defer set.Drop(ctx)
	watermark, err := snapshot()
	if err != nil {
		return ScoreResult{}, err
	}
	ret, err := store.Retrieve(ctx, repo, set, refs, offline.RetrieveOptions{FullNames: true, StoredBefore: watermark, BatchRows: 4096, Found: true})
	if err != nil {
		return ScoreResult{}, err
	}
	defer ret.Close()
	var views []string
	for _, r := range refs {
		if !slices.Contains(views, r.View) {
			views = append(views, r.View)
		}
	}
	nEntity := len(ret.Schema().Fields()) - len(refs) - len(views)

	var fields []arrow.Field
	for _, f := range ret.Schema().Fields()[:nEntity] {
		if f.Name != scoreTS {
			fields = append(fields, f)
		}
	}
	str := arrow.BinaryTypes.String
	fields = append(fields,
		arrow.Field{Name: "products", Type: str}, arrow.Field{Name: "product_scores", Type: str},
		arrow.Field{Name: "send_at", Type: tsType}, arrow.Field{Name: "channel", Type: str},
		arrow.Field{Name: "fallback", Type: arrow.FixedWidthTypes.Boolean}, arrow.Field{Name: "fallback_reasons", Type: str},
		arrow.Field{Name: "models", Type: str})
	schema := arrow.NewSchema(fields, nil)
	tmp := filepath.Join(filepath.Dir(req.Out), "."+filepath.Base(req.Out)+".scoring")
	defer os.Remove(tmp)
	w, err := tablefile.Create(tmp, outFormat, schema, wopt)
	if err != nil {
		return ScoreResult{}, err
	}
	var rows int64
	for {
		rec, err := ret.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.Close()
			return ScoreResult{}, err
		}
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for i := range int(rec.NumRows()) {
			entity := oneRow{}
			col := 0
			for c := range nEntity {
				name := rec.Schema().Field(c).Name
				if name == scoreTS {
					continue
				}
				if kt, ok := keys[name]; ok {
					v, err := offline.CellValue(rec.Column(c), i, kt)
					if err == nil {
						switch x := v.(type) {
						case string:
							entity[name] = onlinestore.KeyValue{Str: x}
						case int64:
							entity[name] = onlinestore.KeyValue{Int: x, IsInt: true}
						}
					}
				}
				appendCell(b.Field(col), rec.Column(c), i)
				col++
			}
			feats.values = map[string]any{}
			for j, r := range refs {
				v, err := offline.CellValue(rec.Column(nEntity+j), i, r.Type)
				if err != nil {
					b.Release()
					rec.Release()
					w.Close()
					return ScoreResult{}, fmt.Errorf("feature %s: %w", r, err)
				}
				feats.values[r.String()] = v
			}
			feats.found = map[string]bool{}
			for k, view := range views {
				found := rec.Column(nEntity + len(refs) + k).(*array.Boolean)
				feats.found[view] = found.IsValid(i) && found.Value(i)
			}
			ans, err := svc.Answer(ctx, nba.Request{Entity: entity, K: req.K, At: req.At})
			if err != nil {
				b.Release()
				rec.Release()
				w.Close()
				return ScoreResult{}, fmt.Errorf("entity row %d: %w", rows+int64(i)+1, err)
			}
			var ps, ss, ms []string
			for _, p := range ans.Products {
				ps, ss = append(ps, p.Label), append(ss, strconv.FormatFloat(p.Score, 'g', -1, 64))
			}
			for _, m := range ans.Models {
				ms = append(ms, fmt.Sprintf("%s:%d", m.Name, m.Version))
			}
			b.Field(col).(*array.StringBuilder).Append(strings.Join(ps, " "))
			b.Field(col + 1).(*array.StringBuilder).Append(strings.Join(ss, " "))
			b.Field(col + 2).(*array.TimestampBuilder).Append(arrow.Timestamp(ans.SendAt.UnixMicro()))
			b.Field(col + 3).(*array.StringBuilder).Append(ans.Channel)
			b.Field(col + 4).(*array.BooleanBuilder).Append(ans.Fallback)
			b.Field(col + 5).(*array.StringBuilder).Append(strings.Join(ans.Reasons, "; "))
			b.Field(col + 6).(*array.StringBuilder).Append(strings.Join(ms, " "))
		}
		rows += rec.NumRows()
		rec.Release()
		out := b.NewRecordBatch()
		b.Release()
		err = w.Write(out)
		out.Release()
		if err != nil {
			w.Close()
			return ScoreResult{}, err
		}
		if req.Progress != nil {
			req.Progress("next best action", rows)
		}
	}
	if err := w.Close(); err != nil {
		return ScoreResult{}, err
	}
	if err := os.Rename(tmp, req.Out); err != nil {
		return ScoreResult{}, err
	}
	return ScoreResult{Rows: rows, Model: "next best action", Watermark: watermark, Duration: time.Since(start)}, nil
}

// appendCell copies one cell of an entity column.
func appendCell(b array.Builder, a arrow.Array, i int) {
	if a.IsNull(i) {
		b.AppendNull()
		return
	}
	switch x := a.(type) {
	case *array.String:
		b.(*array.StringBuilder).Append(x.Value(i))
	case *array.Int64:
		b.(*array.Int64Builder).Append(x.Value(i))
	case *array.Float64:
		b.(*array.Float64Builder).Append(x.Value(i))
	case *array.Boolean:
		b.(*array.BooleanBuilder).Append(x.Value(i))
	case *array.Timestamp:
		b.(*array.TimestampBuilder).Append(x.Value(i))
	default:
		b.AppendNull()
	}
}
