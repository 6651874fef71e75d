package train

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Dataset is a dense classification data set: Rows() rows of Features
// float32 columns, one label per row.
type Dataset struct {
	// X holds the rows, row-major: len(X) == len(Y)*Features.
	X []float32
	// Y holds each row's class, in [0, classes).
	Y []int
	// Weights, when set, weighs each row's loss (finite, >= 0, not all
	// zero); nil weighs every row 1.
	Weights []float32
	// Features is the number of columns.
	Features int
}

// Rows is the number of rows.
func (d *Dataset) Rows() int { return len(d.Y) }

func (d *Dataset) weight(i int) float64 {
	if d.Weights == nil {
		return 1
	}
	return float64(d.Weights[i])
}

// The kinds of bad input; a *DataError wraps one, an options error wraps
// ErrOptions. Test them with errors.Is.
var (
	ErrEmpty     = errors.New("no rows")
	ErrShape     = errors.New("shape mismatch")
	ErrNotFinite = errors.New("value is NaN or Inf")
	ErrLabel     = errors.New("label out of range")
	ErrWeight    = errors.New("bad row weight")
	ErrOptions   = errors.New("bad training option")
)

// DataError reports bad input data and where it is.
type DataError struct {
	// Set is "training" or "validation".
	Set string
	// Row and Col locate the value; -1 when the error is not about one
	// row or column.
	Row, Col int
	// Err is the kind: ErrEmpty, ErrShape, ErrNotFinite, ErrLabel or
	// ErrWeight.
	Err error

	detail string
}

func (e *DataError) Error() string {
	var b strings.Builder
	b.WriteString("train: ")
	b.WriteString(e.Set)
	b.WriteString(" set")
	if e.Row >= 0 {
		fmt.Fprintf(&b, ", row %d", e.Row)
	}
	if e.Col >= 0 {
		fmt.Fprintf(&b, ", column %d", e.Col)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.detail != "" {
		b.WriteString(" (")
		b.WriteString(e.detail)
		b.WriteString(")")
	}
	return b.String()
}

func (e *DataError) Unwrap() error { return e.Err }

// check validates d as the named set of a problem with the given classes
// and, when features > 0, that many columns.
func check(set string, d *Dataset, features, classes int) error {
	bad := func(row, col int, kind error, format string, args ...any) error {
		return &DataError{Set: set, Row: row, Col: col, Err: kind, detail: fmt.Sprintf(format, args...)}
	}
	if d == nil || len(d.Y) == 0 {
		return bad(-1, -1, ErrEmpty, "")
	}
	n := len(d.Y)
	switch {
	case d.Features <= 0:
		return bad(-1, -1, ErrShape, "Features = %d, want > 0", d.Features)
	case features > 0 && d.Features != features:
		return bad(-1, -1, ErrShape, "%d features, the training set has %d", d.Features, features)
	case len(d.X) != n*d.Features:
		return bad(-1, -1, ErrShape, "len(X) = %d, want rows*features = %d*%d", len(d.X), n, d.Features)
	case d.Weights != nil && len(d.Weights) != n:
		return bad(-1, -1, ErrShape, "len(Weights) = %d, want one per row (%d)", len(d.Weights), n)
	}
	for i, c := range d.Y {
		if c < 0 || c >= classes {
			return bad(i, -1, ErrLabel, "label %d, classes are 0..%d", c, classes-1)
		}
	}
	for i, v := range d.X {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return bad(i/d.Features, i%d.Features, ErrNotFinite, "%v", v)
		}
	}
	if d.Weights != nil {
		var total float64
		for i, w := range d.Weights {
			if f := float64(w); math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return bad(i, -1, ErrWeight, "weight %v, want finite and >= 0", w)
			}
			total += float64(w)
		}
		if total == 0 {
			return bad(-1, -1, ErrWeight, "all row weights are zero")
		}
	}
	return nil
}

// standardisation returns each column's mean and 1/std over d (population
// std; a constant column gets std 1).
func standardisation(d *Dataset) (mean, std, inv []float64) {
	f, n := d.Features, d.Rows()
	mean = make([]float64, f)
	std = make([]float64, f)
	inv = make([]float64, f)
	for i := range n {
		for j, v := range d.X[i*f : i*f+f] {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	for i := range n {
		for j, v := range d.X[i*f : i*f+f] {
			dv := float64(v) - mean[j]
			std[j] += dv * dv
		}
	}
	for j := range std {
		s := math.Sqrt(std[j] / float64(n))
		if s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
			s = 1
		}
		std[j], inv[j] = s, 1/s
	}
	return mean, std, inv
}
