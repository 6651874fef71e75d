package onnxrt

import (
	"strconv"
	"strings"
)

// ElementType is the element type of a tensor, as ONNX names it in lower
// case ("float32" for FLOAT, "float64" for DOUBLE); "" when unknown.
type ElementType string

// The element types ONNX defines. Tensor carries the first eight.
const (
	Float32  ElementType = "float32"
	Float64  ElementType = "float64"
	Int64    ElementType = "int64"
	Int32    ElementType = "int32"
	Int8     ElementType = "int8"
	Uint8    ElementType = "uint8"
	Bool     ElementType = "bool"
	String   ElementType = "string"
	Int16    ElementType = "int16"
	Uint16   ElementType = "uint16"
	Uint32   ElementType = "uint32"
	Uint64   ElementType = "uint64"
	Float16  ElementType = "float16"
	BFloat16 ElementType = "bfloat16"
)

// elementTypes is indexed by ONNX's TensorProto.DataType, which is also
// ONNX Runtime's ONNXTensorElementDataType.
var elementTypes = [...]ElementType{
	1: Float32, 2: Uint8, 3: Int8, 4: Uint16, 5: Int16, 6: Int32, 7: Int64,
	8: String, 9: Bool, 10: Float16, 11: Float64, 12: Uint32, 13: Uint64,
	14: "complex64", 15: "complex128", 16: BFloat16,
	17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
	21: "uint4", 22: "int4", 23: "float4e2m1",
}

func elementTypeOf(onnxType int) ElementType {
	if onnxType <= 0 || onnxType >= len(elementTypes) {
		return ""
	}
	return elementTypes[onnxType]
}

// The kinds of value a model input or output can be.
const (
	KindTensor       = "tensor"
	KindSequence     = "sequence"
	KindMap          = "map"
	KindOptional     = "optional"
	KindSparseTensor = "sparse_tensor"
	KindOpaque       = "opaque"
)

// TensorInfo describes one declared input or output of a model.
type TensorInfo struct {
	Name string
	// Kind is "tensor", "sequence" or "map" ("optional", "sparse_tensor",
	// "opaque" for the rare others). A scikit-learn classifier's ZipMap
	// output is a "sequence" whose elements are maps: KeyType is set.
	Kind string
	// Type is the element type of a tensor; of a sequence, the element type
	// of its tensors or the value type of its maps; of a map, its value type.
	Type ElementType
	// KeyType is the key type of a map, or of the maps in a sequence of
	// maps; "" otherwise.
	KeyType ElementType
	// Shape is a tensor's declared shape, -1 for a dynamic dimension; nil
	// when unknown and for non-tensors.
	Shape []int64
	// dims names the symbolic dimensions ("batch"), "" for fixed ones; used
	// in error messages.
	dims []string
}

// String renders the info as `float32 [batch,12]`, `sequence<map<string,float32>>`.
func (ti TensorInfo) String() string {
	switch ti.Kind {
	case KindTensor:
		return string(orUnknown(ti.Type)) + " " + ti.shapeString()
	case KindSequence:
		if ti.KeyType != "" {
			return "sequence<map<" + string(ti.KeyType) + "," + string(orUnknown(ti.Type)) + ">>"
		}
		return "sequence<" + string(orUnknown(ti.Type)) + ">"
	case KindMap:
		return "map<" + string(orUnknown(ti.KeyType)) + "," + string(orUnknown(ti.Type)) + ">"
	}
	return ti.Kind
}

func orUnknown(t ElementType) ElementType {
	if t == "" {
		return "unknown"
	}
	return t
}

// shapeString renders the declared shape with symbolic names where the
// model gives them: [batch,12]; "?" for an unnamed dynamic dimension.
func (ti TensorInfo) shapeString() string {
	if ti.Shape == nil {
		return "[unknown shape]"
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range ti.Shape {
		if i > 0 {
			b.WriteByte(',')
		}
		switch {
		case d >= 0:
			b.WriteString(strconv.FormatInt(d, 10))
		case i < len(ti.dims) && ti.dims[i] != "":
			b.WriteString(ti.dims[i])
		default:
			b.WriteByte('?')
		}
	}
	b.WriteByte(']')
	return b.String()
}

func shapeString(s []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// Tensor is one named input or output. Exactly one of the data slices is
// set, flattened in row-major order, and the product of Shape equals its
// length. Run reads input slices in place (no copy) and does not keep them
// after it returns; output slices belong to the caller.
type Tensor struct {
	Name  string
	Shape []int64

	Float32 []float32
	Float64 []float64
	Int64   []int64
	Int32   []int32
	Int8    []int8
	Uint8   []uint8
	Bool    []bool
	Strings []string
	// Maps holds a ZipMap-style output (sequence<map<int64|string,float>>):
	// one map per batch row, label (an int64 key written in decimal, or the
	// string) -> probability. Shape is [rows]. Outputs only.
	Maps []map[string]float32
}

// ElementType is the type of the set data slice ("" when none or several
// are set). For Maps it is the value type, float32.
func (t *Tensor) ElementType() ElementType {
	typ, n := t.set()
	if n != 1 {
		return ""
	}
	return typ
}

// RowWidth is how many values one row (one index of the first dimension)
// holds: the product of the other dimensions, 1 for a rank below 2.
func (t *Tensor) RowWidth() int {
	w := 1
	for _, d := range t.Shape[min(1, len(t.Shape)):] {
		w *= int(d)
	}
	return w
}

// Len is the length of the set data slice.
func (t *Tensor) Len() int {
	switch t.ElementType() {
	case Float32:
		if t.Maps != nil {
			return len(t.Maps)
		}
		return len(t.Float32)
	case Float64:
		return len(t.Float64)
	case Int64:
		return len(t.Int64)
	case Int32:
		return len(t.Int32)
	case Int8:
		return len(t.Int8)
	case Uint8:
		return len(t.Uint8)
	case Bool:
		return len(t.Bool)
	case String:
		return len(t.Strings)
	}
	return 0
}

// set reports the type of the last non-nil data slice and how many are set.
func (t *Tensor) set() (typ ElementType, n int) {
	if t.Float32 != nil {
		typ, n = Float32, n+1
	}
	if t.Float64 != nil {
		typ, n = Float64, n+1
	}
	if t.Int64 != nil {
		typ, n = Int64, n+1
	}
	if t.Int32 != nil {
		typ, n = Int32, n+1
	}
	if t.Int8 != nil {
		typ, n = Int8, n+1
	}
	if t.Uint8 != nil {
		typ, n = Uint8, n+1
	}
	if t.Bool != nil {
		typ, n = Bool, n+1
	}
	if t.Strings != nil {
		typ, n = String, n+1
	}
	if t.Maps != nil {
		typ, n = Float32, n+1
	}
	return typ, n
}

// setNames lists the data slices that are set, for error messages.
func (t *Tensor) setNames() string {
	var names []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"Float32", t.Float32 != nil}, {"Float64", t.Float64 != nil}, {"Int64", t.Int64 != nil},
		{"Int32", t.Int32 != nil}, {"Int8", t.Int8 != nil}, {"Uint8", t.Uint8 != nil},
		{"Bool", t.Bool != nil}, {"Strings", t.Strings != nil}, {"Maps", t.Maps != nil},
	} {
		if f.set {
			names = append(names, f.name)
		}
	}
	if len(names) == 0 {
		return "no data slice"
	}
	return strings.Join(names, " and ")
}

// carried reports whether Tensor can hold an input or output tensor of type t.
func carried(t ElementType) bool {
	switch t {
	case Float32, Float64, Int64, Int32, Int8, Uint8, Bool, String:
		return true
	}
	return false
}
