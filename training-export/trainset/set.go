// Package trainset turns an exported training set (a file and its
// manifest) into the matrices tailor's trainers take, and describes the
// trained model for the registry with the same encoding, so that serving
// assembles a model's inputs exactly as training did.
package trainset

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/serving/assemble"
	trainingexport "github.com/tailorhq/tailor/training-export"
)

// Feature is one feature column of a training set and how it becomes
// model inputs: numbers as they are (null as 0, with a missing indicator
// when the column has nulls), text one-hot over its most frequent values.
type Feature struct {
	// Ref is the feature reference (view:feature); Column its column in
	// the file.
	Ref, Column string
	Type        definitions.ValueType
	// Vocabulary is the one-hot vocabulary of a text feature.
	Vocabulary []string
	// Missing adds a position that is 1 where the value is null.
	Missing bool

	num  []float64
	null []bool
	text []string
	idx  map[string]int
}

// Width is how many input positions the feature fills.
func (f *Feature) Width() int {
	if f.Type == definitions.String {
		return len(f.Vocabulary)
	}
	if f.Missing {
		return 2
	}
	return 1
}

// Set is a training set read into memory, column by column.
type Set struct {
	// Features are the encoded features, in manifest order; features that
	// cannot be encoded (timestamps, arrays) are listed in Skipped.
	Features []*Feature
	Skipped  []string
	// Labels are each row's label as text ("" when null); Times each
	// row's timestamp.
	Labels []string
	Times  []time.Time
	// Manifest is the export's manifest (its snapshot id is the lineage
	// of models trained on the set).
	Manifest *trainingexport.Manifest
}

// Rows is the number of rows.
func (s *Set) Rows() int { return len(s.Labels) }

// Read loads the training set file path described by manifest m: the
// label column, the timestamp column and every feature the manifest
// lists. Text features keep their vocab most frequent values.
func Read(path string, m *trainingexport.Manifest, labelCol, timeCol string, vocab int) (*Set, error) {
	format, err := tablefile.DetectFormat(path, "")
	if err != nil {
		return nil, err
	}
	r, err := tablefile.Open(path, format, tablefile.ReadOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	schema := r.Schema()
	col := func(name string) (int, error) {
		idx := schema.FieldIndices(name)
		if len(idx) == 0 {
			var names []string
			for _, f := range schema.Fields() {
				names = append(names, f.Name)
			}
			return 0, fmt.Errorf("%s has no column %q (columns: %v)", path, name, names)
		}
		return idx[0], nil
	}
	labelIdx, err := col(labelCol)
	if err != nil {
		return nil, fmt.Errorf("label: %w", err)
	}
	timeIdx, err := col(timeCol)
	if err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	if id := schema.Field(timeIdx).Type.ID(); id != arrow.TIMESTAMP && id != arrow.STRING {
		return nil, fmt.Errorf("timestamp column %q is %s, not a timestamp", timeCol, schema.Field(timeIdx).Type)
	}
	s := &Set{Manifest: m}
	var cols []int
	for _, mc := range m.Features {
		t := definitions.ValueType(mc.Type)
		if t.IsArray() || t == definitions.Timestamp {
			s.Skipped = append(s.Skipped, mc.Ref)
			continue
		}
		i, err := col(mc.Column)
		if err != nil {
			return nil, fmt.Errorf("feature %s: %w", mc.Ref, err)
		}
		s.Features = append(s.Features, &Feature{Ref: mc.Ref, Column: mc.Column, Type: t})
		cols = append(cols, i)
	}
	if len(s.Features) == 0 {
		return nil, fmt.Errorf("%s: no feature the trainers can use (numbers, booleans and text)", path)
	}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		err = s.append(rec, labelIdx, timeIdx, cols)
		rec.Release()
		if err != nil {
			return nil, err
		}
	}
	if s.Rows() == 0 {
		return nil, fmt.Errorf("%s has no rows", path)
	}
	var usable []*Feature
	for _, f := range s.Features {
		f.finish(vocab)
		if f.Width() == 0 {
			s.Skipped = append(s.Skipped, f.Ref) // text that is always null
			continue
		}
		usable = append(usable, f)
	}
	s.Features = usable
	return s, nil
}

func (s *Set) append(rec arrow.RecordBatch, labelIdx, timeIdx int, cols []int) error {
	n := int(rec.NumRows())
	labels := rec.Column(labelIdx)
	ts := rec.Column(timeIdx)
	for i := range n {
		s.Labels = append(s.Labels, labelText(labels, i))
		t, err := cell(ts, i, definitions.Timestamp)
		if err != nil || t == nil {
			return fmt.Errorf("row %d: no timestamp (%v)", len(s.Times), err)
		}
		s.Times = append(s.Times, t.(time.Time))
	}
	for j, f := range s.Features {
		arr := rec.Column(cols[j])
		for i := range n {
			v, err := cell(arr, i, f.Type)
			if err != nil {
				return fmt.Errorf("feature %s, row %d: %w", f.Ref, s.Rows()-n+i, err)
			}
			if f.Type == definitions.String {
				text, _ := v.(string)
				f.text = append(f.text, text)
				continue
			}
			x, ok := number(v)
			f.num = append(f.num, x)
			f.null = append(f.null, !ok)
		}
	}
	return nil
}

// cell reads a value of type t; text cells (CSV files are read as text)
// are parsed as the tailor export wrote them, an empty one being null.
func cell(arr arrow.Array, i int, t definitions.ValueType) (any, error) {
	txt, ok := arr.(*array.String)
	if !ok || t == definitions.String {
		return offline.CellValue(arr, i, t)
	}
	if txt.IsNull(i) || txt.Value(i) == "" {
		return nil, nil
	}
	v := txt.Value(i)
	switch t {
	case definitions.Int32, definitions.Int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if t == definitions.Int32 {
			return int32(n), err
		}
		return n, err
	case definitions.Float32, definitions.Float64:
		return strconv.ParseFloat(v, 64)
	case definitions.Bool:
		return strconv.ParseBool(v)
	case definitions.Timestamp:
		return tablefile.ParseTimestamp(v)
	}
	return nil, fmt.Errorf("%q: cannot read a %s from text", v, t)
}

// labelText renders a label cell as text.
func labelText(arr arrow.Array, i int) string {
	if arr.IsNull(i) {
		return ""
	}
	return arr.ValueStr(i)
}

// number is a feature value as the model sees it: serving's own
// conversion (NaN and infinities are missing).
func number(v any) (float64, bool) { return assemble.Number(v) }

// finish fixes the feature's encoding from the values read.
func (f *Feature) finish(vocab int) {
	if f.Type == definitions.String {
		counts := map[string]int{}
		for _, t := range f.text {
			if t != "" {
				counts[t]++
			}
		}
		for t := range counts {
			f.Vocabulary = append(f.Vocabulary, t)
		}
		sort.Slice(f.Vocabulary, func(a, b int) bool {
			x, y := f.Vocabulary[a], f.Vocabulary[b]
			if counts[x] != counts[y] {
				return counts[x] > counts[y]
			}
			return x < y
		})
		if len(f.Vocabulary) > vocab {
			f.Vocabulary = f.Vocabulary[:vocab]
		}
		f.idx = map[string]int{}
		for i, t := range f.Vocabulary {
			f.idx[t] = i
		}
		return
	}
	f.Missing = slices.Contains(f.null, true)
}

// Width is the width of a row of model inputs.
func (s *Set) Width() int {
	w := 0
	for _, f := range s.Features {
		w += f.Width()
	}
	return w
}

// Matrix encodes the rows rows (indexes into the set), row-major.
func (s *Set) Matrix(rows []int) []float32 {
	w := s.Width()
	x := make([]float32, len(rows)*w)
	for r, i := range rows {
		out := x[r*w : (r+1)*w]
		p := 0
		for _, f := range s.Features {
			switch {
			case f.Type == definitions.String:
				if k, ok := f.idx[f.text[i]]; ok {
					out[p+k] = 1
				}
			default:
				if !f.null[i] {
					out[p] = float32(f.num[i])
				} else if f.Missing {
					out[p+1] = 1
				}
			}
			p += f.Width()
		}
	}
	return x
}

// SplitByTime orders the rows by time and cuts the latest test fraction
// off as the test set, then the latest valid fraction of the rest as the
// validation set: a model is judged on rows later than any it learnt from.
func (s *Set) SplitByTime(valid, test float64) (trainRows, validRows, testRows []int) {
	idx := make([]int, s.Rows())
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return s.Times[idx[a]].Before(s.Times[idx[b]]) })
	nTest := int(float64(len(idx)) * test)
	rest := idx[:len(idx)-nTest]
	nValid := int(float64(len(rest)) * valid)
	return rest[:len(rest)-nValid], rest[len(rest)-nValid:], idx[len(idx)-nTest:]
}

// numericLabel reads a label as a number.
func numericLabel(s string) (float64, bool) {
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
}
