package onnxrt

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// Inspect returns a model's declared inputs and outputs, in the model's
// order, without running it. ONNX Runtime loads the model to do so; a model
// it refuses gives an error wrapping ErrInvalidModel with ONNX Runtime's
// message. Inputs that are initializers are not listed (ONNX Runtime feeds
// them itself).
func Inspect(model []byte) (inputs, outputs []TensorInfo, err error) {
	if err := checkInit(); err != nil {
		return nil, nil, err
	}
	if len(model) == 0 {
		return nil, nil, fmt.Errorf("%w: no bytes", ErrInvalidModel)
	}
	in, out, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: ONNX Runtime cannot load it: %w", ErrInvalidModel, err)
	}
	declared := declaredTypes(model)
	return infos(in, declared), infos(out, declared), nil
}

func infos(ios []ort.InputOutputInfo, declared map[string]protoType) []TensorInfo {
	res := make([]TensorInfo, len(ios))
	for i, io := range ios {
		ti := TensorInfo{Name: io.Name}
		d := declared[io.Name]
		switch io.OrtValueType {
		case ort.ONNXTypeTensor:
			ti.Kind = KindTensor
			ti.Type = elementTypeOf(int(io.DataType))
			ti.Shape = append(make([]int64, 0, len(io.Dimensions)), io.Dimensions...)
			switch {
			case d.kind == KindTensor && !d.hasDims && len(ti.Shape) == 0:
				ti.Shape = nil // no shape declared: unknown rank
			case d.kind == KindTensor && len(d.dims) == len(ti.Shape):
				ti.dims = d.dims
			}
		case ort.ONNXTypeSequence:
			ti.Kind = KindSequence
			ti.Type, ti.KeyType = d.elem, d.key
		case ort.ONNXTypeMap:
			ti.Kind = KindMap
			ti.Type, ti.KeyType = d.elem, d.key
		case ort.ONNXTypeSparseTensor:
			ti.Kind = KindSparseTensor
			ti.Type = elementTypeOf(int(io.DataType))
		case ort.ONNXTypeOptional:
			ti.Kind = KindOptional
		case ort.ONNXTypeOpaque:
			ti.Kind = KindOpaque
		default:
			ti.Kind = "unknown"
		}
		res[i] = ti
	}
	return res
}
