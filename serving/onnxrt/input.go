package onnxrt

import (
	"fmt"
	"slices"
	"strconv"
)

// Problem says what is wrong with an input.
type Problem string

// The problems an InputError reports.
const (
	ProblemUnknown   Problem = "unknown"   // no model input has this name
	ProblemDuplicate Problem = "duplicate" // the name is given twice
	ProblemMissing   Problem = "missing"   // a model input is not given
	ProblemType      Problem = "type"      // wrong element type, or not exactly one data slice
	ProblemShape     Problem = "shape"     // wrong rank, a wrong fixed dimension, or a dimension < 1
	ProblemLength    Problem = "length"    // the data slice's length is not the product of Shape
)

// InputError is an input that does not fit the model. It wraps
// ErrInvalidInput.
type InputError struct {
	Input    string // the input's name
	Problem  Problem
	Expected string // what the model expects, e.g. "float32 [batch,12]"
	Given    string // what was given, e.g. "int64 [5,12]"
}

func (e *InputError) Error() string {
	switch e.Problem {
	case ProblemUnknown:
		return fmt.Sprintf("onnxrt: input %q is not an input of the model (expected %s)", e.Input, e.Expected)
	case ProblemDuplicate:
		return fmt.Sprintf("onnxrt: input %q is given twice", e.Input)
	case ProblemMissing:
		return fmt.Sprintf("onnxrt: input %q (%s) is missing", e.Input, e.Expected)
	}
	return fmt.Sprintf("onnxrt: input %q: wrong %s: the model expects %s, given %s", e.Input, e.Problem, e.Expected, e.Given)
}

func (e *InputError) Unwrap() error { return ErrInvalidInput }

// match checks the given inputs against the model's and places each at its
// model position in ordered.
func (s *Session) match(given []Tensor, ordered []*Tensor) error {
	for i := range given {
		t := &given[i]
		idx := -1
		for j := range s.inputs {
			if s.inputs[j].Name == t.Name {
				idx = j
				break
			}
		}
		if idx < 0 {
			return &InputError{Input: t.Name, Problem: ProblemUnknown, Expected: "one of: " + s.inputNames}
		}
		if ordered[idx] != nil {
			return &InputError{Input: t.Name, Problem: ProblemDuplicate}
		}
		if err := check(&s.inputs[idx], t); err != nil {
			return err
		}
		ordered[idx] = t
	}
	for i, t := range ordered {
		if t == nil {
			in := &s.inputs[i]
			return &InputError{Input: in.Name, Problem: ProblemMissing, Expected: in.String()}
		}
	}
	return s.checkSharedDims(ordered)
}

// check compares one input with its declaration.
func check(want *TensorInfo, t *Tensor) error {
	typ, n := t.set()
	switch {
	case n != 1 || t.Maps != nil:
		return &InputError{Input: t.Name, Problem: ProblemType, Expected: want.String(),
			Given: t.setNames() + " set (an input sets exactly one of Float32, Float64, Int64, Int32, Int8, Uint8, Bool, Strings)"}
	case typ != want.Type:
		return &InputError{Input: t.Name, Problem: ProblemType, Expected: want.String(), Given: string(typ) + " " + shapeString(t.Shape)}
	}
	bad := want.Shape != nil && len(t.Shape) != len(want.Shape)
	for i, d := range t.Shape {
		if d < 1 || (!bad && want.Shape != nil && want.Shape[i] >= 0 && want.Shape[i] != d) {
			bad = true
		}
	}
	if bad {
		given := string(typ) + " " + shapeString(t.Shape)
		if slices.ContainsFunc(t.Shape, func(d int64) bool { return d < 1 }) {
			given += " (every dimension must be at least 1)"
		}
		return &InputError{Input: t.Name, Problem: ProblemShape, Expected: want.String(), Given: given}
	}
	length := int64(t.Len())
	elems := int64(1)
	for _, d := range t.Shape {
		if elems > length/d { // would exceed length (and could overflow)
			elems = length + 1
			break
		}
		elems *= d
	}
	if elems != length {
		return &InputError{Input: t.Name, Problem: ProblemLength,
			Expected: "shape " + shapeString(t.Shape) + " holding " + product(t.Shape) + " values",
			Given:    strconv.FormatInt(length, 10) + " values"}
	}
	return nil
}

// product renders the product of a shape, or "more than 2^63" when it
// overflows.
func product(shape []int64) string {
	p := int64(1)
	for _, d := range shape {
		if d != 0 && p > (1<<63-1)/d {
			return "more than 2^63"
		}
		p *= d
	}
	return strconv.FormatInt(p, 10)
}

// checkSharedDims checks that a symbolic dimension the model uses in several
// inputs (the batch, typically) has the same size in each.
func (s *Session) checkSharedDims(ordered []*Tensor) error {
	for i := range s.inputs {
		for d, name := range s.inputs[i].dims {
			if name == "" {
				continue
			}
			size := ordered[i].Shape[d]
			for j := range i {
				for e, other := range s.inputs[j].dims {
					if other == name && ordered[j].Shape[e] != size {
						return &InputError{Input: s.inputs[i].Name, Problem: ProblemShape,
							Expected: fmt.Sprintf("%s with %s = %d, as in input %q", s.inputs[i].String(), name, ordered[j].Shape[e], s.inputs[j].Name),
							Given:    shapeString(ordered[i].Shape)}
					}
				}
			}
		}
	}
	return nil
}
