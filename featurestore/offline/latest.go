package offline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	chcolumn "github.com/ClickHouse/clickhouse-go/v2/lib/column"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// LatestRow is the latest row of one entity key of a view at some instant.
type LatestRow struct {
	// Keys are the join key values in the view's entity order (string or
	// int64).
	Keys []any
	// EventTS and CreatedTS are Unix seconds.
	EventTS, CreatedTS int64
	// Values are the view's features in definition order: nil for null,
	// else int32, int64, float32, float64, string, bool, time.Time,
	// []float32, []int64 or []string.
	Values []any
}

// Latest returns, for each of keys that has one, the row of view v the
// point-in-time rule picks at instant at: the greatest (event_ts,
// created_ts) with event_ts <= at. The ttl is not applied; callers judge
// age at read time. Each key is a tuple of join key values in the view's
// entity order. The keys travel to ClickHouse as an external table, never
// as text in the query: their number and size are bounded by the caller's
// request, not by ClickHouse's largest query.
func (s *Store) Latest(ctx context.Context, repo *definitions.Repo, v *definitions.FeatureView, keys [][]any, at time.Time) ([]LatestRow, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	table, err := keyTable(repo.JoinKeys(v), v.Name, keys)
	if err != nil {
		return nil, err
	}
	q := s.latestSQL(repo, v, at, []string{fmt.Sprintf("(%s) IN (SELECT * FROM %s)", keyColumns(repo, v), keysTableName)}, nil)
	var out []LatestRow
	_, err = s.streamLatest(clickhouse.Context(ctx, clickhouse.WithExternalTable(table)), q, repo, v, func(r LatestRow) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("latest rows of %s: %w", v.Name, err)
	}
	return out, nil
}

// keysTableName is the external table that carries the keys of a Latest.
const keysTableName = "_tailor_keys"

// keyTable lays keys out as an external table with one column per join
// key, typed as its entity declares.
func keyTable(ents []definitions.Entity, view string, keys [][]any) (*ext.Table, error) {
	cols := make([]func(*ext.Table) error, len(ents))
	for j, e := range ents {
		cols[j] = ext.Column(fmt.Sprintf("k%d", j), chcolumn.Type(chKeyType(e.Type)))
	}
	t, err := ext.NewTable(keysTableName, cols...)
	if err != nil {
		return nil, fmt.Errorf("keys of view %q: %w", view, err)
	}
	for i, k := range keys {
		if len(k) != len(ents) {
			return nil, fmt.Errorf("key %d of view %q has %d parts, want %d", i, view, len(k), len(ents))
		}
		for j, part := range k {
			switch part.(type) {
			case string:
				if ents[j].Type == definitions.Int64 {
					return nil, fmt.Errorf("key %d of view %q: join key %q is int64, got text", i, view, ents[j].JoinKey)
				}
			case int64:
				if ents[j].Type != definitions.Int64 {
					return nil, fmt.Errorf("key %d of view %q: join key %q is %s, got an integer", i, view, ents[j].JoinKey, ents[j].Type)
				}
			default:
				return nil, fmt.Errorf("key %d of view %q: %T is not a join key value", i, view, part)
			}
		}
		if err := t.Append(k...); err != nil {
			return nil, fmt.Errorf("key %d of view %q: %w", i, view, err)
		}
	}
	return t, nil
}

// versionExpr orders a view's rows as the point-in-time rule does, by
// event timestamp then created timestamp, as one UInt64 (event << 32 |
// created): ClickHouse aggregates a scalar key far faster than a tuple.
func versionExpr(v *definitions.FeatureView) string {
	created := "toUInt64(0)"
	if cf := CreatedColumn(v); cf != "" {
		created = "toUInt64(toUnixTimestamp(" + QuoteIdent(cf) + "))"
	}
	return fmt.Sprintf("toUInt64(toUnixTimestamp(%s)) * 4294967296 + %s", QuoteIdent(v.Source.TimestampField), created)
}

// latestSQL is the query of the latest row per key of v at instant at,
// among the rows passing where, of the keys passing having (conditions on
// the aggregated version column "_version").
func (s *Store) latestSQL(repo *definitions.Repo, v *definitions.FeatureView, at time.Time, where, having []string) string {
	if v.Windowed() {
		return s.windowLatestSQL(repo, v, at, where, having)
	}
	ts := QuoteIdent(v.Source.TimestampField)
	version := versionExpr(v)
	var feats []string
	for _, f := range v.Features {
		feats = append(feats, QuoteIdent(f.Name))
	}
	keys := keyColumns(repo, v)
	conds := append([]string{fmt.Sprintf("%s <= toDateTime(%d)", ts, at.Unix())}, where...)
	q := fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s GROUP BY %s",
		keys, strings.Join(latestAggs(v, version, feats), ", "), s.viewTable(v), strings.Join(conds, " AND "), keys)
	if len(having) > 0 {
		q += " HAVING " + strings.Join(having, " AND ")
	}
	return q
}

// streamLatest runs a latestSQL query and hands each row to fn as it
// arrives; it returns the number of rows.
func (s *Store) streamLatest(ctx context.Context, query string, repo *definitions.Repo, v *definitions.FeatureView, fn func(LatestRow) error) (int64, error) {
	ents := repo.JoinKeys(v)
	rows, err := s.conn.Query(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	// Scan targets are reused across rows; values are copied out.
	dests := make([]any, 0, len(ents)+1+len(v.Features))
	keyVals := make([]any, len(ents))
	for j, e := range ents {
		if e.Type == definitions.Int64 {
			keyVals[j] = new(int64)
		} else {
			keyVals[j] = new(string)
		}
		dests = append(dests, keyVals[j])
	}
	var ver uint64
	dests = append(dests, &ver)
	vals := make([]any, len(v.Features))
	for j, f := range v.Features {
		vals[j] = scanTarget(f.Type)
		dests = append(dests, vals[j])
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return n, err
		}
		lr := LatestRow{EventTS: int64(ver >> 32), CreatedTS: int64(ver & 0xFFFFFFFF), Keys: make([]any, len(ents)), Values: make([]any, len(v.Features))}
		for j := range keyVals {
			switch x := keyVals[j].(type) {
			case *int64:
				lr.Keys[j] = *x
			case *string:
				lr.Keys[j] = *x
			}
		}
		for j, f := range v.Features {
			lr.Values[j] = scannedValue(f.Type, vals[j])
		}
		n++
		if err := fn(lr); err != nil {
			return n, err
		}
	}
	return n, rows.Err()
}

// keyColumns lists the quoted join key columns of v.
func keyColumns(repo *definitions.Repo, v *definitions.FeatureView) string {
	var cols []string
	for _, e := range repo.JoinKeys(v) {
		cols = append(cols, QuoteIdent(e.JoinKey))
	}
	return strings.Join(cols, ", ")
}

// latestAggs are the aggregates of a latest-row query: the version
// (event_ts << 32 | created_ts) and each feature of the winning row.
func latestAggs(v *definitions.FeatureView, version string, feats []string) []string {
	aggs := []string{"max(" + version + ") AS _version"}
	winner := fmt.Sprintf("argMax(tuple(%s), %s)", strings.Join(feats, ", "), version)
	for j, f := range v.Features {
		val := fmt.Sprintf("tupleElement(%s, %d)", winner, j+1)
		if f.Type.IsArray() {
			aggs = append(aggs, val)
		} else {
			aggs = append(aggs, "toNullable("+canonical(f.Type, val)+")")
		}
	}
	return aggs
}

func scanTarget(t definitions.ValueType) any {
	switch t {
	case definitions.Int32:
		return new(*int32)
	case definitions.Int64, definitions.Timestamp:
		return new(*int64)
	case definitions.Float32:
		return new(*float32)
	case definitions.Float64:
		return new(*float64)
	case definitions.Bool:
		return new(*uint8)
	case definitions.ArrayFloat32:
		return new([]float32)
	case definitions.ArrayInt64:
		return new([]int64)
	case definitions.ArrayString:
		return new([]string)
	}
	return new(*string)
}

func scannedValue(t definitions.ValueType, dest any) any {
	switch d := dest.(type) {
	case **int32:
		if *d != nil {
			return **d
		}
	case **int64:
		if *d != nil {
			if t == definitions.Timestamp {
				return time.UnixMicro(**d).UTC()
			}
			return **d
		}
	case **float32:
		if *d != nil {
			return **d
		}
	case **float64:
		if *d != nil {
			return **d
		}
	case **uint8:
		if *d != nil {
			return **d != 0
		}
	case **string:
		if *d != nil {
			return **d
		}
	case *[]float32:
		return *d
	case *[]int64:
		return *d
	case *[]string:
		return *d
	}
	return nil
}
