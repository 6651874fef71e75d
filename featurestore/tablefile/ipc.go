package tablefile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// arrowMagic starts (and ends) an Arrow IPC file; a stream starts with a
// message instead. The file format pads the magic to 8 bytes and then holds
// a complete stream, end-of-stream marker included, before its footer.
var arrowMagic = []byte("ARROW1")

const arrowMagicPadded = 8

// defaultMaxBody is the IPC reader's own limit on a message body, which
// applies where the size of the input is unknown.
const defaultMaxBody = 256 << 20

// newArrowSource reads the Arrow IPC file or stream format, told apart by
// content. A seekable input is read whole from offset 0, a file through its
// footer; a pipe is read sequentially, a file as the stream it embeds.
func newArrowSource(in io.Reader, mem memory.Allocator) (source, error) {
	ras, ok := in.(readAtSeeker)
	if !ok {
		br := bufio.NewReaderSize(in, 64<<10)
		if head, _ := br.Peek(arrowMagicPadded); bytes.HasPrefix(head, arrowMagic) {
			_, _ = br.Discard(arrowMagicPadded)
		}
		return newIPCStreamSource(br, defaultMaxBody, mem)
	}
	size, err := ras.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("finding the size: %w", err)
	}
	head := make([]byte, len(arrowMagic))
	if n, _ := ras.ReadAt(head, 0); n == len(head) && bytes.Equal(head, arrowMagic) {
		if err := checkFileFooter(ras, size); err != nil {
			return nil, err
		}
		fr, err := ipc.NewFileReader(noClose{ras}, ipc.WithAllocator(mem), ipc.WithBodySizeLimit(max(size, 1)))
		if err != nil {
			return nil, fmt.Errorf("not a readable Arrow IPC file: %w", err)
		}
		return &ipcFileSource{fr: fr}, nil
	}
	return newIPCStreamSource(bufio.NewReaderSize(io.NewSectionReader(ras, 0, size), 64<<10), size, mem)
}

// newIPCStreamSource reads an IPC stream whose messages have bodies of at
// most maxBody bytes (the size of the input where known): a corrupt length
// then fails at once instead of being allocated.
func newIPCStreamSource(r io.Reader, maxBody int64, mem memory.Allocator) (source, error) {
	maxBody = max(maxBody, 1)
	r, err := checkedStream(r, maxBody)
	if err != nil {
		return nil, err
	}
	// ipc.NewReader ignores the size limits: a message reader applies them.
	opts := []ipc.Option{
		ipc.WithAllocator(mem),
		ipc.WithBodySizeLimit(maxBody),
		ipc.WithMetadataSizeLimit(min(maxMetadata, maxBody)),
	}
	sr, err := ipc.NewReaderFromMessageReader(ipc.NewMessageReader(r, opts...), opts...)
	if err != nil {
		return nil, fmt.Errorf("not a readable Arrow IPC file or stream: %w", err)
	}
	return &ipcStreamSource{sr: sr}, nil
}

type ipcFileSource struct {
	fr *ipc.FileReader
	i  int
}

func (s *ipcFileSource) schema() *arrow.Schema { return s.fr.Schema() }
func (s *ipcFileSource) close() error          { return s.fr.Close() }

func (s *ipcFileSource) next() (arrow.RecordBatch, error) {
	if s.i >= s.fr.NumRecords() {
		return nil, io.EOF
	}
	rec, err := s.fr.RecordBatchAt(s.i)
	if err != nil {
		return nil, fmt.Errorf("record batch %d: %w", s.i, err)
	}
	s.i++
	return rec, nil
}

type ipcStreamSource struct{ sr *ipc.Reader }

func (s *ipcStreamSource) schema() *arrow.Schema { return s.sr.Schema() }

func (s *ipcStreamSource) close() error {
	s.sr.Release()
	return nil
}

func (s *ipcStreamSource) next() (arrow.RecordBatch, error) {
	if !s.sr.Next() {
		if err := s.sr.Err(); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, io.EOF
	}
	rec := s.sr.RecordBatch()
	rec.Retain()
	return rec, nil
}

// arrowWriter writes the Arrow IPC file format.
type arrowWriter struct{ fw *ipc.FileWriter }

func newArrowWriter(w io.Writer, schema *arrow.Schema) (*arrowWriter, error) {
	fw, err := ipc.NewFileWriter(writeOnly{w}, ipc.WithSchema(schema))
	if err != nil {
		return nil, fmt.Errorf("arrow writer: %w", err)
	}
	return &arrowWriter{fw: fw}, nil
}

func (a *arrowWriter) write(rec arrow.RecordBatch) error { return a.fw.Write(rec) }
func (a *arrowWriter) close() error                      { return a.fw.Close() }
