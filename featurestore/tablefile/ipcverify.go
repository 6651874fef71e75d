package tablefile

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The Arrow IPC reader trusts the counts in the flatbuffers that describe a
// schema: a corrupt count makes it allocate that many fields (an
// unrecoverable out-of-memory crash), and a corrupt offset can make the
// nesting of fields endless (a stack overflow). Before the reader sees a
// schema, verifySchemaMessage and verifyFooter check that every vector on
// the way fits in its buffer and that nesting is bounded. They follow the
// flatbuffers runtime's arithmetic (uint32 offsets that wrap) and report a
// read outside the buffer as corruption.

var errCorruptSchema = errors.New("corrupt Arrow IPC schema")

// maxSchemaDepth bounds the nesting of fields (Arrow's own writers stop at
// 64).
const maxSchemaDepth = 64

type fbTable struct {
	b   []byte
	pos uint32
}

func fbU32(b []byte, off uint32) uint32 {
	if uint64(off)+4 > uint64(len(b)) {
		panic(errCorruptSchema)
	}
	return binary.LittleEndian.Uint32(b[off:])
}

func fbU16(b []byte, off uint32) uint16 {
	if uint64(off)+2 > uint64(len(b)) {
		panic(errCorruptSchema)
	}
	return binary.LittleEndian.Uint16(b[off:])
}

func fbU8(b []byte, off uint32) byte {
	if uint64(off) >= uint64(len(b)) {
		panic(errCorruptSchema)
	}
	return b[off]
}

func fbRoot(b []byte) fbTable { return fbTable{b: b, pos: fbU32(b, 0)} }

// offset is the position of the field in vtable slot vo relative to the
// table, 0 when absent.
func (t fbTable) offset(vo uint16) uint32 {
	vt := uint32(int32(t.pos) - int32(fbU32(t.b, t.pos)))
	if vo < fbU16(t.b, vt) {
		return uint32(fbU16(t.b, vt+uint32(vo)))
	}
	return 0
}

// table follows the table reference in slot vo.
func (t fbTable) table(vo uint16) (fbTable, bool) {
	o := t.offset(vo)
	if o == 0 {
		return fbTable{}, false
	}
	x := o + t.pos
	return fbTable{b: t.b, pos: x + fbU32(t.b, x)}, true
}

// vector returns the start and length of the vector in slot vo, whose
// elements take elem bytes, after checking that it fits in the buffer.
func (t fbTable) vector(vo uint16, elem int) (start uint32, n int) {
	o := t.offset(vo)
	if o == 0 {
		return 0, 0
	}
	x := o + t.pos
	x += fbU32(t.b, x)
	n = int(fbU32(t.b, x))
	start = x + 4
	if uint64(start)+uint64(n)*uint64(elem) > uint64(len(t.b)) {
		panic(errCorruptSchema)
	}
	return start, n
}

// element is the i-th table of a vector of tables.
func (t fbTable) element(start uint32, i int) fbTable {
	x := start + uint32(i)*4
	return fbTable{b: t.b, pos: x + fbU32(t.b, x)}
}

// schemaWalk visits a Schema table and what hangs from it, with a budget
// of tables so that shared subtrees cannot make the walk exponential.
type schemaWalk struct{ budget int }

func (w *schemaWalk) visit() {
	if w.budget--; w.budget < 0 {
		panic(errCorruptSchema)
	}
}

func (w *schemaWalk) schema(t fbTable) {
	// Schema: endianness, fields, custom_metadata, features.
	w.visit()
	start, n := t.vector(6, 4)
	for i := range n {
		w.field(t.element(start, i), 1)
	}
	w.keyValues(t, 8)
	t.vector(10, 8)
}

func (w *schemaWalk) field(t fbTable, depth int) {
	// Field: name, nullable, type_type, type, dictionary, children,
	// custom_metadata.
	w.visit()
	if depth > maxSchemaDepth {
		panic(errCorruptSchema)
	}
	t.vector(4, 1)
	start, n := t.vector(14, 4)
	for i := range n {
		w.field(t.element(start, i), depth+1)
	}
	w.keyValues(t, 16)
}

func (w *schemaWalk) keyValues(t fbTable, vo uint16) {
	start, n := t.vector(vo, 4)
	for i := range n {
		kv := t.element(start, i)
		w.visit()
		kv.vector(4, 1)
		kv.vector(6, 1)
	}
}

// verify runs check over the flatbuffer b, turning any read outside it
// into errCorruptSchema.
func verify(b []byte, check func(w *schemaWalk, root fbTable)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(error); ok && errors.Is(e, errCorruptSchema) {
				err = e
				return
			}
			err = fmt.Errorf("%w: %v", errCorruptSchema, p)
		}
	}()
	check(&schemaWalk{budget: len(b)/4 + 1}, fbRoot(b))
	return nil
}

// verifySchemaMessage checks the flatbuffer of an IPC message: the length
// of its body, and its schema when it holds one.
func verifySchemaMessage(meta []byte, maxBody int64) error {
	return verify(meta, func(w *schemaWalk, msg fbTable) {
		// Message: version, header_type, header, bodyLength, custom_metadata.
		if o := msg.offset(10); o != 0 {
			lo, hi := fbU32(meta, o+msg.pos), fbU32(meta, o+msg.pos+4)
			if body := int64(uint64(hi)<<32 | uint64(lo)); body < 0 || body > maxBody {
				panic(fmt.Errorf("%w: message body of %d bytes", errCorruptSchema, body))
			}
		}
		w.keyValues(msg, 12)
		const headerSchema = 1
		if o := msg.offset(6); o == 0 || fbU8(meta, o+msg.pos) != headerSchema {
			return
		}
		if hdr, ok := msg.table(8); ok {
			w.schema(hdr)
		}
	})
}

// verifyFooter checks the flatbuffer of an IPC file's footer.
func verifyFooter(footer []byte) error {
	return verify(footer, func(w *schemaWalk, f fbTable) {
		// Footer: version, schema, dictionaries, recordBatches,
		// custom_metadata; a Block is 24 bytes.
		if sc, ok := f.table(6); ok {
			w.schema(sc)
		}
		f.vector(8, 24)
		f.vector(10, 24)
		w.keyValues(f, 12)
	})
}

// maxMetadata is the largest message or footer flatbuffer read (the IPC
// reader's own default limit).
const maxMetadata = 64 << 20

// checkFileFooter verifies the footer of the IPC file in r of the given
// size. A footer it cannot locate is left to the IPC reader to report.
func checkFileFooter(r io.ReaderAt, size int64) error {
	const tail = 4 + 6 // footer length, "ARROW1"
	if size < int64(len(arrowMagic))+tail {
		return nil
	}
	buf := make([]byte, tail)
	if _, err := r.ReadAt(buf, size-tail); err != nil {
		return nil
	}
	n := int64(binary.LittleEndian.Uint32(buf))
	if !bytes.Equal(buf[4:], arrowMagic) || n <= 0 || n > maxMetadata || n > size-tail {
		return nil
	}
	footer := make([]byte, n)
	if _, err := r.ReadAt(footer, size-tail-n); err != nil {
		return nil
	}
	if err := verifyFooter(footer); err != nil {
		return fmt.Errorf("not a readable Arrow IPC file: footer: %w", err)
	}
	return nil
}

// checkedStream reads the first message of an IPC stream from r, verifies
// it (its body at most maxBody bytes), and returns a reader of the whole
// stream again.
func checkedStream(r io.Reader, maxBody int64) (io.Reader, error) {
	var head [8]byte
	n, err := io.ReadFull(r, head[:4])
	if err != nil {
		return io.MultiReader(bytes.NewReader(head[:n]), r), nil // the IPC reader reports it
	}
	read := head[:4]
	size := binary.LittleEndian.Uint32(head[:4])
	if size == 0xFFFFFFFF { // continuation marker, then the length
		m, err := io.ReadFull(r, head[4:8])
		read = head[:4+m]
		if err != nil {
			return io.MultiReader(bytes.NewReader(read), r), nil
		}
		size = binary.LittleEndian.Uint32(head[4:8])
	}
	if int32(size) <= 0 || int64(size) > min(maxMetadata, maxBody) {
		return nil, fmt.Errorf("not a readable Arrow IPC file or stream: it starts with a message of %d bytes of metadata", int32(size))
	}
	meta := make([]byte, size)
	if _, err := io.ReadFull(r, meta); err != nil {
		return nil, fmt.Errorf("not a readable Arrow IPC stream: the schema message is cut short: %w", err)
	}
	if err := verifySchemaMessage(meta, maxBody); err != nil {
		return nil, fmt.Errorf("not a readable Arrow IPC stream: %w", err)
	}
	return io.MultiReader(bytes.NewReader(read), bytes.NewReader(meta), r), nil
}

// checkStoredSchema verifies the Arrow schema a Parquet file stores (base64
// of an IPC schema message under the key ARROW:schema), decoded as pqarrow
// decodes it.
func checkStoredSchema(serialized string) error {
	var decoded []byte
	var err error
	if len(serialized)%4 == 0 {
		decoded, err = base64.StdEncoding.DecodeString(serialized)
	}
	if len(decoded) == 0 || err != nil {
		if decoded, err = base64.RawStdEncoding.DecodeString(serialized); err != nil {
			return nil // pqarrow reports it
		}
	}
	if _, err := checkedStream(bytes.NewReader(decoded), int64(len(decoded))); err != nil {
		return fmt.Errorf("stored Arrow schema: %w", err)
	}
	return nil
}
