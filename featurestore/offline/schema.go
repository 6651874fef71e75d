package offline

import (
	"fmt"
	"strings"

	"github.com/tailorhq/tailor/featurestore/definitions"
)

// InsertedAtColumn is the insertion-time column every table tailor writes
// carries: set by ClickHouse when the row is stored.
const InsertedAtColumn = "_inserted_at"

// chType returns the ClickHouse column type that stores values of t in a
// tailor-owned table. Scalars are Nullable so a missing value stays missing;
// arrays cannot be Nullable in ClickHouse, so a null array is stored empty.
func chType(t definitions.ValueType) string {
	switch t {
	case definitions.ArrayFloat32:
		return "Array(Float32)"
	case definitions.ArrayInt64:
		return "Array(Int64)"
	case definitions.ArrayString:
		return "Array(String)"
	}
	return "Nullable(" + chScalar(t) + ")"
}

// chKeyType is the ClickHouse type of an entity join key (never null).
func chKeyType(t definitions.ValueType) string { return chScalar(t) }

func chScalar(t definitions.ValueType) string {
	switch t {
	case definitions.Int32:
		return "Int32"
	case definitions.Int64:
		return "Int64"
	case definitions.Float32:
		return "Float32"
	case definitions.Float64:
		return "Float64"
	case definitions.String:
		return "String"
	case definitions.Bool:
		return "UInt8"
	case definitions.Timestamp:
		return "DateTime"
	}
	return "String"
}

// compatible reports whether an existing ClickHouse column of type have can
// serve a feature or key of type want. Nullable and LowCardinality wrappers
// are looked through; integers and floats must match in width so values are
// exact.
func compatible(want definitions.ValueType, have string) bool {
	h := unwrapCH(have)
	switch want {
	case definitions.Int32:
		return h == "Int32" || h == "Int16" || h == "Int8" || h == "UInt16" || h == "UInt8"
	case definitions.Int64:
		return h == "Int64" || h == "Int32" || h == "Int16" || h == "Int8" || h == "UInt32" || h == "UInt16" || h == "UInt8"
	case definitions.Float32:
		return h == "Float32"
	case definitions.Float64:
		return h == "Float64" || h == "Float32"
	case definitions.String:
		return h == "String" || strings.HasPrefix(h, "FixedString(")
	case definitions.Bool:
		return h == "UInt8" || h == "Bool"
	case definitions.Timestamp:
		return timestampCompatible(have)
	case definitions.ArrayFloat32:
		return h == "Array(Float32)"
	case definitions.ArrayInt64:
		return h == "Array(Int64)"
	case definitions.ArrayString:
		return h == "Array(String)"
	}
	return false
}

func unwrapCH(t string) string {
	for _, w := range []string{"Nullable(", "LowCardinality("} {
		if strings.HasPrefix(t, w) && strings.HasSuffix(t, ")") {
			t = t[len(w) : len(t)-1]
		}
	}
	// LowCardinality(Nullable(String)) unwraps in the order above only once.
	if strings.HasPrefix(t, "Nullable(") && strings.HasSuffix(t, ")") {
		t = t[len("Nullable(") : len(t)-1]
	}
	return t
}

// timestampCompatible reports whether a ClickHouse column can be an event or
// created timestamp of a view.
func timestampCompatible(have string) bool {
	h := unwrapCH(have)
	return h == "DateTime" || strings.HasPrefix(h, "DateTime(") || strings.HasPrefix(h, "DateTime64(")
}

// QuoteIdent quotes a ClickHouse identifier (a database, table or
// column name) for a query: definitions hold validated
// identifiers, but entity queries may name columns anything.
func QuoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "\\`") + "`" }

// tableRef is a fully qualified, quoted table name.
type tableRef struct{ DB, Name string }

func (t tableRef) String() string { return QuoteIdent(t.DB) + "." + QuoteIdent(t.Name) }
func (t tableRef) Plain() string  { return t.DB + "." + t.Name }

// viewTable returns the table that holds a view's rows: the external table
// named in its source, or the table tailor owns in the store's database.
func (s *Store) viewTable(v *definitions.FeatureView) tableRef {
	if v.External() {
		if db, name, ok := strings.Cut(v.Source.Table, "."); ok {
			return tableRef{DB: db, Name: name}
		}
		return tableRef{DB: s.db, Name: v.Source.Table}
	}
	return tableRef{DB: s.db, Name: "fv_" + v.Name}
}

// createTableSQL is the DDL of a tailor-owned view table. It is not
// partitioned: ingestion attaches a whole staged file with one
// ATTACH PARTITION tuple(), which is atomic only for a single partition.
func createTableSQL(t tableRef, repo *definitions.Repo, v *definitions.FeatureView) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (", t)
	var order []string
	for _, e := range repo.JoinKeys(v) {
		fmt.Fprintf(&b, "%s %s, ", QuoteIdent(e.JoinKey), chKeyType(e.Type))
		order = append(order, QuoteIdent(e.JoinKey))
	}
	fmt.Fprintf(&b, "%s DateTime, %s DateTime, ", QuoteIdent(v.Source.TimestampField), QuoteIdent(CreatedColumn(v)))
	order = append(order, QuoteIdent(v.Source.TimestampField))
	for _, f := range v.Features {
		fmt.Fprintf(&b, "%s %s, ", QuoteIdent(f.Name), chType(f.Type))
	}
	fmt.Fprintf(&b, "%s DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (%s)", InsertedAtColumn, strings.Join(order, ", "))
	return b.String()
}

// CreatedColumn is the created-timestamp column of a view's table: the one
// its source names, created_ts in a table tailor owns, "" when an
// external table has none.
func CreatedColumn(v *definitions.FeatureView) string {
	if v.Source.CreatedTimestampField != "" || v.External() {
		return v.Source.CreatedTimestampField
	}
	return "created_ts"
}

// TableOf names the ClickHouse table ("db.table") holding the rows of v.
func (s *Store) TableOf(v *definitions.FeatureView) string { return s.viewTable(v).Plain() }
