package tablefile

import (
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

func newStreamWriter(w io.Writer, schema *arrow.Schema) *ipc.Writer {
	return ipc.NewWriter(w, ipc.WithSchema(schema))
}
