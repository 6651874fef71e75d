package predlog

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"math"
	"sync"

	"github.com/tailorhq/tailor/serving/assemble"
)

// digestVersion starts every digested stream, so a change of encoding
// never yields a digest equal to an old one.
const digestVersion = "tailor.inputs.v1"

// Element type tags of the digest encoding.
const (
	tagFloat32 byte = 1 + iota
	tagFloat64
	tagInt64
	tagInt32
)

// Digest returns the hex sha256 of input tensors: their order, names,
// shapes, element types and values (floats by their bits, so -0 and 0, or
// two NaNs with different payloads, differ). The hashed bytes are
//
//	"tailor.inputs.v1" uvarint(#tensors) then per tensor:
//	uvarint(len(name)) name uvarint(rank) dims as int64 LE,
//	per non-empty slice in the order Float32, Float64, Int64, Int32:
//	tag (1..4) uvarint(len) values LE (floats as IEEE bits), then 0
//
// (uvarint is LEB128), so the same inputs give the same digest on every
// machine, and no two different inputs share an encoding.
func Digest(ts []assemble.Tensor) string {
	d := digesters.Get().(*digester)
	defer digesters.Put(d)
	d.h.Reset()
	// buf is a local copy of the slice header: appends to it need no write
	// barrier, as they would through the pooled struct.
	buf := append(d.buf[:0], digestVersion...)
	buf = binary.AppendUvarint(buf, uint64(len(ts)))
	for i := range ts {
		t := &ts[i]
		buf = d.room(buf, binary.MaxVarintLen64)
		buf = binary.AppendUvarint(buf, uint64(len(t.Name)))
		buf = d.str(buf, t.Name)
		buf = d.room(buf, binary.MaxVarintLen64)
		buf = binary.AppendUvarint(buf, uint64(len(t.Shape)))
		buf = d.int64s(buf, t.Shape)
		if len(t.Float32) > 0 {
			buf = d.head(buf, tagFloat32, len(t.Float32))
			buf = d.float32s(buf, t.Float32)
		}
		if len(t.Float64) > 0 {
			buf = d.head(buf, tagFloat64, len(t.Float64))
			buf = d.float64s(buf, t.Float64)
		}
		if len(t.Int64) > 0 {
			buf = d.head(buf, tagInt64, len(t.Int64))
			buf = d.int64s(buf, t.Int64)
		}
		if len(t.Int32) > 0 {
			buf = d.head(buf, tagInt32, len(t.Int32))
			buf = d.int32s(buf, t.Int32)
		}
		buf = d.room(buf, 1)
		buf = append(buf, 0) // end of tensor: its slices are optional
	}
	d.h.Write(buf)
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], d.h.Sum(d.sum[:0]))
	return string(out[:])
}

// digestBuffer is the size of a digester's buffer; it never grows.
const digestBuffer = 4096

// digesters recycles hashes and buffers: Digest runs on every request,
// and without the pool its allocations cost more than hashing small
// inputs (BenchmarkDigest).
var digesters = sync.Pool{New: func() any {
	return &digester{h: sha256.New(), buf: make([]byte, 0, digestBuffer)}
}}

// digester feeds a hash through a fixed buffer. Its methods take and
// return the buffer's current slice.
type digester struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// room makes sure n more bytes fit in buf, hashing it when they do not.
func (d *digester) room(buf []byte, n int) []byte {
	if cap(buf)-len(buf) < n {
		d.h.Write(buf)
		buf = buf[:0]
	}
	return buf
}

func (d *digester) head(buf []byte, tag byte, n int) []byte {
	buf = d.room(buf, 1+binary.MaxVarintLen64)
	buf = append(buf, tag)
	return binary.AppendUvarint(buf, uint64(n))
}

func (d *digester) str(buf []byte, s string) []byte {
	for len(s) > 0 {
		buf = d.room(buf, 1)
		n := min(len(s), cap(buf)-len(buf))
		buf, s = append(buf, s[:n]...), s[n:]
	}
	return buf
}

func (d *digester) float32s(buf []byte, vs []float32) []byte {
	for len(vs) > 0 {
		buf = d.room(buf, 4)
		n := min(len(vs), (cap(buf)-len(buf))/4)
		for _, v := range vs[:n] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		vs = vs[n:]
	}
	return buf
}

func (d *digester) float64s(buf []byte, vs []float64) []byte {
	for len(vs) > 0 {
		buf = d.room(buf, 8)
		n := min(len(vs), (cap(buf)-len(buf))/8)
		for _, v := range vs[:n] {
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		}
		vs = vs[n:]
	}
	return buf
}

func (d *digester) int64s(buf []byte, vs []int64) []byte {
	for len(vs) > 0 {
		buf = d.room(buf, 8)
		n := min(len(vs), (cap(buf)-len(buf))/8)
		for _, v := range vs[:n] {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
		}
		vs = vs[n:]
	}
	return buf
}

func (d *digester) int32s(buf []byte, vs []int32) []byte {
	for len(vs) > 0 {
		buf = d.room(buf, 4)
		n := min(len(vs), (cap(buf)-len(buf))/4)
		for _, v := range vs[:n] {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(v))
		}
		vs = vs[n:]
	}
	return buf
}
