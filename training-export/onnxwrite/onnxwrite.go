// Package onnxwrite writes classifiers trained in Go as ONNX models that
// ONNX Runtime loads, so that a model trained by tailor is registered and
// served like one exported from PyTorch or scikit-learn.
//
// Classifier turns a stack of dense layers into an ONNX graph: one Gemm per
// layer with the weights as initializers, Relu where a layer asks for it,
// and Softmax over the classes at the end. The model takes a float32 input
// of shape [N, In] and gives a float32 output of shape [N, Out], N being a
// symbolic batch dimension, so one model scores one row or a whole
// population.
package onnxwrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	onnxv1 "github.com/tailorhq/tailor/proto/gen/tailor/onnx/v1"
	"google.golang.org/protobuf/proto"
)

// The ONNX versions Classifier writes: IR version 8 (ONNX 1.10) with
// operator set 13 of the default domain, both well inside what ONNX Runtime
// 1.24 supports.
const (
	IRVersion    = 8
	OpsetVersion = 13
)

// BatchDim is the symbolic name of the batch dimension of the input and
// output.
const BatchDim = "N"

// DefaultProducer is the producer name written when the spec gives none.
const DefaultProducer = "tailor"

// maxParamBytes bounds the weights of one model: an ONNX file is one
// protobuf message, which protobuf limits to 2 GiB (larger models need
// ONNX's external data, which this package does not write).
const maxParamBytes = 2<<30 - 1<<20

// ONNX's TensorProto.DataType FLOAT and AttributeProto.AttributeType INT.
const (
	dataTypeFloat = 1
	attrTypeInt   = 2
)

// Dense is one fully connected layer: y = x·W + B, then max(y, 0) when
// ReLU is set.
type Dense struct {
	// In and Out are the layer's input and output widths.
	In, Out int
	// W holds In×Out weights in row-major order: W[i*Out+j] weighs input i
	// into output j.
	W []float32
	// B holds Out biases.
	B []float32
	// ReLU applies max(y, 0) to the layer's output.
	ReLU bool
}

// ClassifierSpec describes a feed-forward classifier for Classifier.
type ClassifierSpec struct {
	// Input names the model's input tensor (e.g. "features"), float32
	// [N, Layers[0].In].
	Input string
	// Layers are applied in order; each layer's In is the previous one's
	// Out. One layer without ReLU is a logistic regression.
	Layers []Dense
	// Output names the model's output tensor (e.g. "probabilities"),
	// float32 [N, Out of the last layer].
	Output string
	// Logits leaves out the final Softmax: the output is the last layer's
	// scores. By default the output is a probability distribution over the
	// classes (Softmax over axis 1).
	Logits bool
	// ProducerName and ProducerVersion say what wrote the model (the
	// training job); ProducerName defaults to DefaultProducer.
	ProducerName, ProducerVersion string
	// Doc is the model's human-readable documentation.
	Doc string
	// Metadata is written as the model's metadata properties, by key
	// order; keys must not be empty.
	Metadata map[string]string
}

// ErrInvalidSpec is wrapped by every *SpecError.
var ErrInvalidSpec = errors.New("onnxwrite: invalid classifier spec")

// Problem says what is wrong with a spec.
type Problem string

// The problems a SpecError reports.
const (
	ProblemNoLayers      Problem = "no layers"      // Layers is empty
	ProblemWidth         Problem = "width"          // In or Out is below 1
	ProblemChain         Problem = "chain"          // In differs from the previous layer's Out
	ProblemWeightsLength Problem = "weights length" // len(W) != In*Out
	ProblemBiasLength    Problem = "bias length"    // len(B) != Out
	ProblemNotFinite     Problem = "not finite"     // a weight or bias is NaN or infinite
	ProblemTooLarge      Problem = "too large"      // the weights pass protobuf's 2 GiB limit
	ProblemName          Problem = "name"           // Input or Output is empty, the same, or an internal name
	ProblemMetadata      Problem = "metadata"       // a metadata key is empty
)

// SpecError is a ClassifierSpec that Classifier cannot write. It wraps
// ErrInvalidSpec.
type SpecError struct {
	// Layer is the index in Layers of the faulty layer; -1 when the problem
	// is not about one layer.
	Layer   int
	Problem Problem
	// Detail says what was found, e.g. "W has 11 values, want In*Out = 12".
	Detail string
}

func (e *SpecError) Error() string {
	if e.Layer >= 0 {
		return fmt.Sprintf("onnxwrite: layer %d: %s: %s", e.Layer, e.Problem, e.Detail)
	}
	return fmt.Sprintf("onnxwrite: %s: %s", e.Problem, e.Detail)
}

func (e *SpecError) Unwrap() error { return ErrInvalidSpec }

// Classifier returns the ONNX model (the bytes of an .onnx file) that the
// spec describes. A spec it cannot write gives a *SpecError naming the
// layer and the problem.
func Classifier(spec ClassifierSpec) ([]byte, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	model := build(spec)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("onnxwrite: marshal: %w", err)
	}
	return b, nil
}

func validate(spec ClassifierSpec) error {
	if len(spec.Layers) == 0 {
		return &SpecError{Layer: -1, Problem: ProblemNoLayers, Detail: "a classifier needs at least one layer"}
	}
	var params int64
	for i, l := range spec.Layers {
		if l.In < 1 || l.Out < 1 {
			return &SpecError{Layer: i, Problem: ProblemWidth, Detail: fmt.Sprintf("In = %d, Out = %d; both must be at least 1", l.In, l.Out)}
		}
		if i > 0 && l.In != spec.Layers[i-1].Out {
			return &SpecError{Layer: i, Problem: ProblemChain, Detail: fmt.Sprintf("In = %d, but layer %d has Out = %d", l.In, i-1, spec.Layers[i-1].Out)}
		}
		if l.In > math.MaxInt/l.Out || len(l.W) != l.In*l.Out {
			return &SpecError{Layer: i, Problem: ProblemWeightsLength, Detail: fmt.Sprintf("W has %d values, want In*Out = %d*%d", len(l.W), l.In, l.Out)}
		}
		if len(l.B) != l.Out {
			return &SpecError{Layer: i, Problem: ProblemBiasLength, Detail: fmt.Sprintf("B has %d values, want Out = %d", len(l.B), l.Out)}
		}
		if j := nonFinite(l.W); j >= 0 {
			return &SpecError{Layer: i, Problem: ProblemNotFinite, Detail: fmt.Sprintf("W[%d] is %v", j, l.W[j])}
		}
		if j := nonFinite(l.B); j >= 0 {
			return &SpecError{Layer: i, Problem: ProblemNotFinite, Detail: fmt.Sprintf("B[%d] is %v", j, l.B[j])}
		}
		params += int64(len(l.W)) + int64(len(l.B))
	}
	if params*4 > maxParamBytes {
		return &SpecError{Layer: -1, Problem: ProblemTooLarge, Detail: fmt.Sprintf("%d weights take %d bytes; an ONNX file holds less than 2 GiB", params, params*4)}
	}

	switch {
	case spec.Input == "":
		return &SpecError{Layer: -1, Problem: ProblemName, Detail: "Input is empty"}
	case spec.Output == "":
		return &SpecError{Layer: -1, Problem: ProblemName, Detail: "Output is empty"}
	case spec.Input == spec.Output:
		return &SpecError{Layer: -1, Problem: ProblemName, Detail: fmt.Sprintf("Input and Output are both %q", spec.Input)}
	}
	for i := range spec.Layers {
		for _, internal := range layerNames(i) {
			if spec.Input == internal || spec.Output == internal {
				return &SpecError{Layer: -1, Problem: ProblemName, Detail: fmt.Sprintf("%q names a value inside the graph; choose another name", internal)}
			}
		}
	}
	if _, ok := spec.Metadata[""]; ok {
		return &SpecError{Layer: -1, Problem: ProblemMetadata, Detail: "a metadata key is empty"}
	}
	return nil
}

// nonFinite is the index of the first NaN or infinite value, or -1.
func nonFinite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}

// layerNames are the graph values of layer i: weights, bias, Gemm output,
// Relu output.
func layerNames(i int) [4]string {
	p := "dense" + strconv.Itoa(i)
	return [4]string{p + ".W", p + ".B", p + ".gemm", p + ".relu"}
}

// build assembles the graph: Gemm (+ Relu) per layer, then Softmax; the
// last node writes spec.Output.
func build(spec ClassifierSpec) *onnxv1.ModelProto {
	graph := &onnxv1.GraphProto{
		Name:   "classifier",
		Input:  []*onnxv1.ValueInfoProto{floatMatrix(spec.Input, spec.Layers[0].In)},
		Output: []*onnxv1.ValueInfoProto{floatMatrix(spec.Output, spec.Layers[len(spec.Layers)-1].Out)},
	}
	x := spec.Input
	for i, l := range spec.Layers {
		names := layerNames(i)
		graph.Initializer = append(graph.Initializer,
			floatTensor(names[0], l.W, int64(l.In), int64(l.Out)),
			floatTensor(names[1], l.B, int64(l.Out)))
		graph.Node = append(graph.Node, &onnxv1.NodeProto{
			Name: "dense" + strconv.Itoa(i), OpType: "Gemm",
			Input: []string{x, names[0], names[1]}, Output: []string{names[2]},
		})
		x = names[2]
		if l.ReLU {
			graph.Node = append(graph.Node, &onnxv1.NodeProto{
				Name: names[3], OpType: "Relu", Input: []string{x}, Output: []string{names[3]},
			})
			x = names[3]
		}
	}
	if spec.Logits {
		graph.Node[len(graph.Node)-1].Output[0] = spec.Output
	} else {
		graph.Node = append(graph.Node, &onnxv1.NodeProto{
			Name: "softmax", OpType: "Softmax", Input: []string{x}, Output: []string{spec.Output},
			Attribute: []*onnxv1.AttributeProto{{Name: "axis", Type: attrTypeInt, I: 1}},
		})
	}

	producer := spec.ProducerName
	if producer == "" {
		producer = DefaultProducer
	}
	model := &onnxv1.ModelProto{
		IrVersion:       IRVersion,
		OpsetImport:     []*onnxv1.OperatorSetIdProto{{Domain: "", Version: OpsetVersion}},
		ProducerName:    producer,
		ProducerVersion: spec.ProducerVersion,
		DocString:       spec.Doc,
		Graph:           graph,
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Metadata)) {
		model.MetadataProps = append(model.MetadataProps, &onnxv1.StringStringEntryProto{Key: k, Value: spec.Metadata[k]})
	}
	return model
}

// floatMatrix declares a float32 [N, width] graph input or output.
func floatMatrix(name string, width int) *onnxv1.ValueInfoProto {
	return &onnxv1.ValueInfoProto{
		Name: name,
		Type: &onnxv1.TypeProto{Value: &onnxv1.TypeProto_TensorType{TensorType: &onnxv1.TypeProto_Tensor{
			ElemType: dataTypeFloat,
			Shape: &onnxv1.TensorShapeProto{Dim: []*onnxv1.TensorShapeProto_Dimension{
				{Value: &onnxv1.TensorShapeProto_Dimension_DimParam{DimParam: BatchDim}},
				{Value: &onnxv1.TensorShapeProto_Dimension_DimValue{DimValue: int64(width)}},
			}},
		}}},
	}
}

// floatTensor is a float32 initializer, its data as little-endian raw
// bytes.
func floatTensor(name string, v []float32, dims ...int64) *onnxv1.TensorProto {
	raw := make([]byte, 0, 4*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
	}
	return &onnxv1.TensorProto{Name: name, Dims: dims, DataType: dataTypeFloat, RawData: raw}
}
