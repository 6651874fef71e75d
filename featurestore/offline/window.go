package offline

import (
	"fmt"
	"strings"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// Windowed views compute their features from an event table: at an
// instant T, each aggregation combines the key's events with a timestamp
// after T minus its window and at most T. A key without any event in the
// view's longest window has no row at T (its features are null, as for a
// view without a row), online and offline alike.

// windowAggs are the aggregate expressions of features feats of windowed
// view v, in the order given, at the instant expression at (a column or a
// constant); atOnce is the instant outside aggregates (any(column) when
// at is a column constant per group).
func windowAggs(v *definitions.FeatureView, feats []definitions.Feature, at, atOnce string) []string {
	ts := QuoteIdent(v.Source.TimestampField)
	aggs := make([]string, len(feats))
	for i, f := range feats {
		a := f.Agg
		in := fmt.Sprintf("%s > %s - %d AND %s <= %s", ts, at, int64(a.Window/time.Second), ts, at)
		cond := in
		if a.Where != "" {
			cond += " AND (" + a.Where + ")"
		}
		col := QuoteIdent(a.Column)
		orNull := func(expr string) string { return fmt.Sprintf("if(countIf(%s) = 0, NULL, %s)", cond, expr) }
		var e string
		switch a.Function {
		case definitions.AggCount:
			e = fmt.Sprintf("countIf(%s)", cond)
		case definitions.AggSum:
			e = fmt.Sprintf("sumIf(%s, %s)", col, cond)
		case definitions.AggMean:
			e = orNull(fmt.Sprintf("avgIf(%s, %s)", col, cond))
		case definitions.AggMin:
			e = orNull(fmt.Sprintf("minIf(%s, %s)", col, cond))
		case definitions.AggMax:
			e = orNull(fmt.Sprintf("maxIf(%s, %s)", col, cond))
		case definitions.AggLast:
			// Ties on the timestamp go to the greatest value, so the
			// answer does not depend on the order rows are read in.
			e = orNull(fmt.Sprintf("argMaxIf(%s, tuple(%s, %s), %s)", col, ts, col, cond))
		case definitions.AggDistinctCount:
			e = fmt.Sprintf("uniqExactIf(%s, %s)", col, cond)
		case definitions.AggShare:
			e = fmt.Sprintf("if(countIf(%s) = 0, NULL, countIf(%s) / countIf(%s))", in, cond, in)
		case definitions.AggDaysSinceLast:
			e = orNull(fmt.Sprintf("(toInt64(toUnixTimestamp(%s)) - toInt64(toUnixTimestamp(maxIf(%s, %s)))) / 86400", atOnce, ts, cond))
		}
		aggs[i] = "toNullable(" + canonical(f.Type, e) + ")"
	}
	return aggs
}

// windowLatestSQL is latestSQL for a windowed view: per key, the
// aggregates at instant at.
func (s *Store) windowLatestSQL(repo *definitions.Repo, v *definitions.FeatureView, at time.Time, where, having []string) string {
	ts := QuoteIdent(v.Source.TimestampField)
	instant := fmt.Sprintf("toDateTime(%d)", at.Unix())
	conds := append([]string{fmt.Sprintf("%s <= %s AND %s > %s - %d", ts, instant, ts, instant, int64(v.LongestWindow()/time.Second))}, where...)
	keys := keyColumns(repo, v)
	// The version is the latest event with the instant computed at as its
	// created time: values computed later (an older event arrived, or
	// events slid out of a window) replace earlier ones in the tier.
	q := fmt.Sprintf("SELECT %s, toUInt64(toUnixTimestamp(max(%s))) * 4294967296 + %d AS _version, %s FROM %s WHERE %s GROUP BY %s",
		keys, ts, at.Unix(), strings.Join(windowAggs(v, v.Features, instant, instant), ", "), s.viewTable(v), strings.Join(conds, " AND "), keys)
	if len(having) > 0 {
		q += " HAVING " + strings.Join(having, " AND ")
	}
	return q
}

// windowJoinSQL is viewJoinSQL for a windowed view: the view's events
// (left, streamed) joined to the entity keys (right, hashed), kept when
// within the longest window before the entity row's timestamp, then
// aggregated per entity row at its own timestamp. The tuple __v<idx>
// holds the requested features feats in their order, as viewJoinSQL's
// does, so the outer query reads element n for the n-th of them.
func (s *Store) windowJoinSQL(repo *definitions.Repo, set *EntitySet, v *definitions.FeatureView, feats []definitions.FeatureRef, idx int, storedBefore time.Time) (string, error) {
	wanted := make([]definitions.Feature, len(feats))
	for i, r := range feats {
		f, ok := v.Feature(r.Feature)
		if !ok {
			return "", fmt.Errorf("feature view %q has no feature %q", v.Name, r.Feature)
		}
		wanted[i] = *f
	}
	ts := QuoteIdent(v.Source.TimestampField)
	longest := int64(v.LongestWindow() / time.Second)
	keys, rightKeys, err := entityKeys(repo, set, v)
	if err != nil {
		return "", err
	}
	bounds := fmt.Sprintf("%s <= toDateTime(%d) AND %s > toDateTime(%d)", ts, set.maxTS, ts, max(0, set.minTS-longest))
	if !storedBefore.IsZero() {
		bounds += fmt.Sprintf(" AND %s < toDateTime(%d)", QuoteIdent(InsertedAtColumn), storedBefore.Unix())
	}
	// The join is a subquery of its own: ClickHouse 18.16 resolves the
	// aggregates' arguments before a join in the same query, where the
	// entity row's timestamp is not yet known.
	return fmt.Sprintf(
		"SELECT __tailor_row, toUInt8(1) AS __found%d, tuple(%s) AS __v%d FROM ("+
			"SELECT *, __tailor_row, __tailor_ts FROM (SELECT * FROM %s WHERE %s) "+
			"ALL INNER JOIN (SELECT __tailor_row, __tailor_ts, %s FROM %s) USING %s "+
			"WHERE %s <= __tailor_ts AND %s > __tailor_ts - %d) GROUP BY __tailor_row",
		idx, strings.Join(windowAggs(v, wanted, "__tailor_ts", "any(__tailor_ts)"), ", "), idx,
		s.viewTable(v), bounds,
		strings.Join(rightKeys, ", "), set.table, strings.Join(keys, ", "),
		ts, ts, longest), nil
}

// aggCompatible reports whether a column of ClickHouse type have can feed
// aggregation feature f: sum and mean need numbers, distinct_count takes
// anything, and min, max and last need a column of the feature's type.
func aggCompatible(f definitions.Feature, have string) bool {
	switch f.Agg.Function {
	case definitions.AggSum, definitions.AggMean:
		return compatible(definitions.Float64, have) || compatible(definitions.Int64, have) || unwrapCH(have) == "UInt64"
	case definitions.AggDistinctCount:
		return true
	case definitions.AggMin, definitions.AggMax:
		if f.Type == definitions.Float64 {
			return compatible(definitions.Float64, have) || compatible(definitions.Int64, have)
		}
	}
	return compatible(f.Type, have)
}

// chMessage is the first line of a ClickHouse error, without the stack.
func chMessage(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if i := strings.Index(msg, ". Stack trace"); i > 0 {
		msg = msg[:i]
	}
	return msg
}
