package batcher

import (
	"fmt"
	"slices"

	"github.com/tailorhq/tailor/serving/onnxrt"
)

// concatBuffers holds one worker's concatenated inputs. They are reused from
// batch to batch (RunFunc keeps nothing of its inputs), and stay bounded: a
// concatenated batch holds at most MaxBatch rows, a larger request runs
// alone on its own tensors.
type concatBuffers struct {
	in    []onnxrt.Tensor
	slots []slot
}

// slot is the buffer of one input position, one slice per element type.
type slot struct {
	shape []int64
	f32   []float32
	f64   []float64
	i64   []int64
	i32   []int32
	i8    []int8
	u8    []uint8
	bools []bool
	strs  []string
}

// concat joins the requests' inputs along dimension 0. The requests are
// compatible (see compatible), so input i of each has the same name, type
// and trailing dimensions.
func (c *concatBuffers) concat(reqs []*request) []onnxrt.Tensor {
	first := reqs[0].inputs
	rows := 0
	for _, r := range reqs {
		rows += r.rows
	}
	if len(c.slots) < len(first) {
		c.slots = append(c.slots, make([]slot, len(first)-len(c.slots))...)
	}
	c.in = slices.Grow(c.in[:0], len(first))
	for i := range first {
		t, s := &first[i], &c.slots[i]
		s.shape = append(s.shape[:0], t.Shape...)
		s.shape[0] = int64(rows)
		in := onnxrt.Tensor{Name: t.Name, Shape: s.shape}
		switch t.ElementType() {
		case onnxrt.Float32:
			s.f32 = gather(s.f32, reqs, i, func(t *onnxrt.Tensor) []float32 { return t.Float32 })
			in.Float32 = s.f32
		case onnxrt.Float64:
			s.f64 = gather(s.f64, reqs, i, func(t *onnxrt.Tensor) []float64 { return t.Float64 })
			in.Float64 = s.f64
		case onnxrt.Int64:
			s.i64 = gather(s.i64, reqs, i, func(t *onnxrt.Tensor) []int64 { return t.Int64 })
			in.Int64 = s.i64
		case onnxrt.Int32:
			s.i32 = gather(s.i32, reqs, i, func(t *onnxrt.Tensor) []int32 { return t.Int32 })
			in.Int32 = s.i32
		case onnxrt.Int8:
			s.i8 = gather(s.i8, reqs, i, func(t *onnxrt.Tensor) []int8 { return t.Int8 })
			in.Int8 = s.i8
		case onnxrt.Uint8:
			s.u8 = gather(s.u8, reqs, i, func(t *onnxrt.Tensor) []uint8 { return t.Uint8 })
			in.Uint8 = s.u8
		case onnxrt.Bool:
			s.bools = gather(s.bools, reqs, i, func(t *onnxrt.Tensor) []bool { return t.Bool })
			in.Bool = s.bools
		case onnxrt.String:
			s.strs = gather(s.strs, reqs, i, func(t *onnxrt.Tensor) []string { return t.Strings })
			in.Strings = s.strs
		}
		c.in = append(c.in, in)
	}
	return c.in
}

// release drops the buffers' references to the callers' strings once the
// run is over.
func (c *concatBuffers) release() {
	for i := range c.slots {
		clear(c.slots[i].strs)
	}
}

// gather appends input i of every request to buf[:0].
func gather[T any](buf []T, reqs []*request, i int, data func(*onnxrt.Tensor) []T) []T {
	n := 0
	for _, r := range reqs {
		n += len(data(&r.inputs[i]))
	}
	buf = slices.Grow(buf[:0], n)
	for _, r := range reqs {
		buf = append(buf, data(&r.inputs[i])...)
	}
	if buf == nil {
		buf = []T{} // a tensor with no elements still needs its slice set
	}
	return buf
}

// checkRows checks that every output of a run over rows rows has one row per
// input row along dimension 0, and a data slice that matches its shape.
func checkRows(out []onnxrt.Tensor, rows int) error {
	for i := range out {
		t := &out[i]
		if len(t.Shape) == 0 || t.Shape[0] != int64(rows) {
			return fmt.Errorf("%w: output %q has shape %v; a run over %d rows must give %d along dimension 0",
				ErrBadOutput, t.Name, t.Shape, rows, rows)
		}
		if t.ElementType() == "" {
			return fmt.Errorf("%w: output %q: not exactly one data slice set", ErrBadOutput, t.Name)
		}
		if t.Maps != nil {
			if len(t.Shape) != 1 || len(t.Maps) != rows {
				return fmt.Errorf("%w: output %q has %d maps for shape %v", ErrBadOutput, t.Name, len(t.Maps), t.Shape)
			}
			continue
		}
		if size, ok := elements(t.Shape); !ok || size != t.Len() {
			return fmt.Errorf("%w: output %q: shape %v holds %d elements, data has %d", ErrBadOutput, t.Name, t.Shape, size, t.Len())
		}
	}
	return nil
}

// split gives each request its rows of every output, in request order, and
// finishes it. The data are subslices of the batch's outputs, and the
// requests' tensors and shapes subslices of one allocation each: disjoint,
// and capped at their length so that appending to one never writes into
// another's.
func split(out []onnxrt.Tensor, reqs []*request) {
	dims := 0
	for i := range out {
		dims += len(out[i].Shape)
	}
	tensors := make([]onnxrt.Tensor, len(out)*len(reqs))
	shapes := make([]int64, dims*len(reqs))
	off := 0
	for _, r := range reqs {
		res := tensors[:len(out):len(out)]
		tensors = tensors[len(out):]
		for i := range out {
			t := &out[i]
			shape := shapes[:len(t.Shape):len(t.Shape)]
			shapes = shapes[len(t.Shape):]
			copy(shape, t.Shape)
			shape[0] = int64(r.rows)
			width := t.RowWidth()
			lo, hi := off*width, (off+r.rows)*width
			res[i] = onnxrt.Tensor{Name: t.Name, Shape: shape}
			switch {
			case t.Maps != nil:
				res[i].Maps = t.Maps[off : off+r.rows : off+r.rows]
			case t.Float32 != nil:
				res[i].Float32 = t.Float32[lo:hi:hi]
			case t.Float64 != nil:
				res[i].Float64 = t.Float64[lo:hi:hi]
			case t.Int64 != nil:
				res[i].Int64 = t.Int64[lo:hi:hi]
			case t.Int32 != nil:
				res[i].Int32 = t.Int32[lo:hi:hi]
			case t.Int8 != nil:
				res[i].Int8 = t.Int8[lo:hi:hi]
			case t.Uint8 != nil:
				res[i].Uint8 = t.Uint8[lo:hi:hi]
			case t.Bool != nil:
				res[i].Bool = t.Bool[lo:hi:hi]
			case t.Strings != nil:
				res[i].Strings = t.Strings[lo:hi:hi]
			}
		}
		rows := r.rows
		r.finish(res, nil) // r is the caller's from here
		off += rows
	}
}
