// Package tablefile reads and writes tabular files (CSV, Parquet, Arrow IPC)
// as streams of Arrow record batches, so memory stays flat in file size.
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
	CSV     Format = "csv"
	Parquet Format = "parquet"
	Arrow   Format = "arrow"
)

// ParseFormat parses a --format value.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "csv":
		return CSV, nil
	case "parquet", "pq":
		return Parquet, nil
	case "arrow", "ipc", "feather":
		return Arrow, nil
	}
	return "", fmt.Errorf("unknown format %q (valid: csv, parquet, arrow)", s)
}

// DetectFormat returns override when given, else the format implied by the
// extension of path.
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
	return "", fmt.Errorf("%s: cannot tell the format from the extension: pass --format csv, parquet or arrow", path)
}
