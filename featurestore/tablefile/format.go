// Package tablefile reads and writes tabular files (CSV, Parquet, Arrow IPC)
// as streams of Arrow record batches, so memory stays flat in file size.
//
// Readers hand out batches of at most ReadOptions.BatchRows rows; writers
// take batches of any size. CSV is read without type inference (every column
// is a nullable string column, an empty field being null) and written with
// exact integers, shortest round-trip floats, RFC 3339 timestamps in UTC and
// JSON arrays for list columns. Parquet and Arrow IPC keep the Arrow types.
package tablefile

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Format is a tabular file format.
type Format string

// The supported formats.
const (
	// CSV is RFC 4180 comma-separated values with a header row.
	CSV Format = "csv"
	// Parquet is Apache Parquet, written with the Arrow schema stored in it.
	Parquet Format = "parquet"
	// Arrow is Arrow IPC: the file format ("feather" v2) when written, the
	// file or the stream format when read.
	Arrow Format = "arrow"
)

// Compression is the codec of a Parquet file's column chunks.
type Compression string

// The Parquet compressions tailor writes.
const (
	// Zstd is Zstandard, the default (an empty Compression means it).
	Zstd Compression = "zstd"
	// Snappy is Snappy, faster to write and read, larger.
	Snappy Compression = "snappy"
	// Uncompressed leaves the column chunks as they are encoded.
	Uncompressed Compression = "none"
)

// CompressionError is a compression that does not exist or does not
// apply to the output.
type CompressionError struct {
	// Value is the compression asked for.
	Value string
	// Output names the output it does not apply to (a format such as
	// "csv", or another kind of output); empty when Value is not a known
	// compression.
	Output string
}

func (e *CompressionError) Error() string {
	if e.Output != "" {
		return fmt.Sprintf("compression %s applies to Parquet files only, not to %s output", e.Value, e.Output)
	}
	return fmt.Sprintf("unknown compression %q (valid: zstd, snappy, none)", e.Value)
}

// ParseCompression parses a --compression value: "zstd", "snappy" or
// "none", in any case; empty is the default, zstd.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(strings.ToLower(strings.TrimSpace(s))); c {
	case "":
		return Zstd, nil
	case Zstd, Snappy, Uncompressed:
		return c, nil
	}
	return "", &CompressionError{Value: s}
}

// CheckCompression returns the compression a file of format f is written
// with when c is asked for: for Parquet the codec c names (zstd when
// empty); for CSV and Arrow IPC, which are written uncompressed, nothing,
// and an error if c is not empty.
func CheckCompression(f Format, c Compression) (Compression, error) {
	if f != Parquet {
		if c != "" {
			return "", &CompressionError{Value: string(c), Output: string(f)}
		}
		return "", nil
	}
	return ParseCompression(string(c))
}

// ParseFormat parses a --format value: "csv", "parquet" (or "pq"), "arrow"
// (or "ipc", "feather"), in any case.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "csv":
		return CSV, nil
	case "parquet", "pq":
		return Parquet, nil
	case "arrow", "ipc", "feather":
		return Arrow, nil
	}
	return "", fmt.Errorf("unknown format %q (valid: csv, parquet, arrow; ipc and feather mean arrow)", s)
}

// DetectFormat returns the format named by override when it is not empty,
// else the format implied by the extension of path: .csv, .parquet or .pq,
// .arrow, .ipc, .feather or .arrows.
func DetectFormat(path, override string) (Format, error) {
	if override != "" {
		return ParseFormat(override)
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return CSV, nil
	case ".parquet", ".pq":
		return Parquet, nil
	case ".arrow", ".ipc", ".feather", ".arrows":
		return Arrow, nil
	}
	return "", fmt.Errorf("%s: cannot tell the format from the file name: pass --format csv, parquet or arrow", path)
}
