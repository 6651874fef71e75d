package registry

import "github.com/tailorhq/tailor/serving/onnxrt"

// InspectONNX is the Inspector backed by ONNX Runtime: it loads the
// runtime if needed and reads the model's graph.
func InspectONNX(model []byte) (inputs, outputs []Tensor, err error) {
	if err := onnxrt.Init(""); err != nil {
		return nil, nil, err
	}
	in, out, err := onnxrt.Inspect(model)
	if err != nil {
		return nil, nil, err
	}
	return tensors(in), tensors(out), nil
}

func tensors(ts []onnxrt.TensorInfo) []Tensor {
	res := make([]Tensor, len(ts))
	for i, t := range ts {
		res[i] = Tensor{Name: t.Name, Kind: t.Kind, Type: string(t.Type), KeyType: string(t.KeyType), Shape: t.Shape}
	}
	return res
}
