package onnxrt

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// The binding reports a sequence or map input/output only as "sequence" or
// "map", without its element types, and a tensor's dynamic dimensions only
// as -1. declaredTypes reads the graph's declared inputs and outputs from the
// ONNX protobuf itself (ModelProto.graph.input/output, field numbers from
// onnx.proto) to fill those in. ONNX Runtime has already accepted the bytes
// when this runs; anything unexpected just leaves the extra details out.

// protoType is the part of an ONNX TypeProto that TensorInfo reports.
type protoType struct {
	kind    string
	elem    ElementType // tensor element type; sequence element / map value type
	key     ElementType // map key type
	dims    []string    // symbolic dimension names of a tensor ("" for fixed)
	hasDims bool
}

// declaredTypes maps each graph input and output name to its declared type.
func declaredTypes(model []byte) map[string]protoType {
	out := map[string]protoType{}
	graph, ok := field(model, 7) // ModelProto.graph
	if !ok {
		return out
	}
	eachField(graph, func(num protowire.Number, v []byte) {
		if num != 11 && num != 12 { // GraphProto.input, GraphProto.output
			return
		}
		var name string
		var typ protoType
		eachField(v, func(num protowire.Number, v []byte) {
			switch num {
			case 1: // ValueInfoProto.name
				name = string(v)
			case 2: // ValueInfoProto.type
				typ = parseType(v)
			}
		})
		if name != "" {
			out[name] = typ
		}
	})
	return out
}

// parseType reads a TypeProto.
func parseType(b []byte) protoType {
	var t protoType
	eachField(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1: // tensor_type
			t.kind = KindTensor
			eachField(v, func(num protowire.Number, v []byte) {
				switch num {
				case 1: // elem_type (varint, delivered as its encoding)
					t.elem = elementTypeOf(varint(v))
				case 2: // shape
					t.hasDims = true
					eachField(v, func(num protowire.Number, v []byte) {
						if num == 1 { // TensorShapeProto.dim
							name, _ := field(v, 2) // Dimension.dim_param
							t.dims = append(t.dims, string(name))
						}
					})
				}
			})
		case 4: // sequence_type
			t.kind = KindSequence
			if elem, ok := field(v, 1); ok {
				inner := parseType(elem)
				t.elem, t.key = inner.elem, inner.key
			}
		case 5: // map_type
			t.kind = KindMap
			eachField(v, func(num protowire.Number, v []byte) {
				switch num {
				case 1: // key_type
					t.key = elementTypeOf(varint(v))
				case 2: // value_type
					t.elem = parseType(v).elem
				}
			})
		case 8: // sparse_tensor_type
			t.kind = KindSparseTensor
		case 9: // optional_type
			t.kind = KindOptional
		}
	})
	return t
}

// eachField calls fn for every length-delimited or varint field of a
// message; a varint's value is passed re-encoded (see varint). It stops
// quietly at malformed input.
func eachField(b []byte, fn func(protowire.Number, []byte)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return
			}
			fn(num, v)
			b = b[n:]
		case protowire.VarintType:
			_, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return
			}
			fn(num, b[:n])
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return
			}
			b = b[n:]
		}
	}
}

// field returns the last occurrence of a length-delimited field.
func field(b []byte, want protowire.Number) (v []byte, ok bool) {
	eachField(b, func(num protowire.Number, x []byte) {
		if num == want {
			v, ok = x, true
		}
	})
	return v, ok
}

func varint(b []byte) int {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0
	}
	return int(v)
}
