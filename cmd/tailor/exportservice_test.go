package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/tablefile"
	exportv1 "github.com/tailorhq/tailor/proto/gen/tailor/export/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/export/v1/exportv1connect"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
)

// streamCSV reads an ExportTrainingSet stream, checks it ends with a
// manifest, and renders the Arrow IPC stream as CSV for comparison.
func streamCSV(t *testing.T, base string, req *exportv1.ExportTrainingSetRequest) (string, map[string]any) {
	t.Helper()
	client := exportv1connect.NewExportServiceClient(h2cClient(), base)
	stream, err := client.ExportTrainingSet(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var data bytes.Buffer
	var manifest map[string]any
	for stream.Receive() {
		switch p := stream.Msg().GetPart().(type) {
		case *exportv1.ExportTrainingSetResponse_Arrow:
			if manifest != nil {
				t.Fatal("Arrow bytes after the manifest")
			}
			data.Write(p.Arrow)
		case *exportv1.ExportTrainingSetResponse_ManifestJson:
			if err := json.Unmarshal([]byte(p.ManifestJson), &manifest); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("export stream: %v", err)
	}
	if manifest == nil {
		t.Fatal("no manifest at the end of the stream")
	}
	return ipcCSV(t, "the stream", &data), manifest
}

// ipcCSV renders an Arrow IPC stream as CSV.
func ipcCSV(t *testing.T, what string, stream io.Reader) string {
	t.Helper()
	r, err := ipc.NewReader(stream)
	if err != nil {
		t.Fatalf("%s is not an Arrow IPC stream: %v", what, err)
	}
	defer r.Release()
	var out bytes.Buffer
	w, err := tablefile.NewWriter(&out, tablefile.CSV, r.Schema(), tablefile.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		if err := w.Write(r.RecordBatch()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestExportServiceStreamsTheFileExport streams the tour's training set
// over the ExportService with the entity rows as an uploaded file, inline
// and from SQL: each, read back with an Arrow reader, equals the file
// export, and each ends with a recorded manifest.
func TestExportServiceStreamsTheFileExport(t *testing.T) {
	c, dir := tourSetup(t)
	base, _ := startServe(t, c, "--warm-start=false")
	ents := filepath.Join(dir, "data/entities.csv")
	want := filepath.Join(dir, "want.csv")
	c.ok("export", "--entities", ents, "--service", "svc", "--out", want)

	fileReq := &exportv1.ExportTrainingSetRequest{FeatureService: "svc",
		Entities: &exportv1.ExportTrainingSetRequest_File{File: &exportv1.EntityFile{Content: []byte(tourEntities), Format: "csv", Name: "entities.csv"}}}
	got, manifest := streamCSV(t, base, fileReq)
	if got != readFile(t, want) {
		t.Fatalf("streamed export:\n%s\nfile export:\n%s", got, readFile(t, want))
	}
	if manifest["rows"] != float64(6) || manifest["format"] != "arrow-stream" || manifest["entities"].(map[string]any)["kind"] != "upload" {
		t.Errorf("manifest %v", manifest)
	}
	id := manifest["snapshot_id"].(string)
	if got := strings.TrimSpace(c.sql("SELECT count() FROM " + c.db + ".snapshots WHERE snapshot_id = '" + id + "'")); got != "1" {
		t.Errorf("snapshot %s recorded %s times", id, got)
	}

	// The CLI exports over the server into any format.
	for _, ext := range []string{"csv", "parquet"} {
		out := filepath.Join(dir, "over."+ext)
		mustContain(t, c.ok("export", "--server", base, "--entities", ents, "--service", "svc", "--out", out), "6 rows over", out+".manifest.json")
		if ext == "csv" && readFile(t, out) != readFile(t, want) {
			t.Fatalf("export --server:\n%s\nwant\n%s", readFile(t, out), readFile(t, want))
		}
		if ext == "parquet" {
			if _, got := toCSV(t, out); got != readFile(t, want) {
				t.Fatalf("export --server to parquet:\n%s", got)
			}
		}
	}

	// Inline rows: the first two entity rows of the tour.
	at := func(s string) *featurestorev1.Value {
		ts, _ := time.Parse(time.RFC3339, s)
		return &featurestorev1.Value{Kind: &featurestorev1.Value_TimestampValue{TimestampValue: timestamppb.New(ts)}}
	}
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	i64 := func(n int64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
	}
	inline, _ := streamCSV(t, base, &exportv1.ExportTrainingSetRequest{Features: []string{"customer_stats:orders_7d", "product_stats:popularity"},
		Entities: &exportv1.ExportTrainingSetRequest_Inline{Inline: &exportv1.InlineEntities{Rows: []*exportv1.InlineRow{
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "product_id": i64(9007199254740993), "event_timestamp": at("2024-01-02T12:00:00Z")}},
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c2"), "product_id": i64(9007199254740994), "event_timestamp": at("2024-01-01T00:00:00Z")}},
		}}}})
	mustContain(t, inline, "c1,2024-01-02T12:00:00Z,9007199254740993,3,0.25", "c2,2024-01-01T00:00:00Z,9007199254740994,7,")

	sql, _ := streamCSV(t, base, &exportv1.ExportTrainingSetRequest{Features: []string{"customer_stats:orders_7d"},
		Entities: &exportv1.ExportTrainingSetRequest_Sql{Sql: "SELECT 'c1' AS customer_id, toDateTime('2024-01-02 12:00:00') AS event_timestamp"}})
	mustContain(t, sql, "c1,2024-01-02T12:00:00Z,3")

	// Bad requests name the problem.
	client := exportv1connect.NewExportServiceClient(h2cClient(), base)
	for _, tc := range []struct {
		req  *exportv1.ExportTrainingSetRequest
		want string
	}{
		{&exportv1.ExportTrainingSetRequest{FeatureService: "svc"}, "no entity rows"},
		{&exportv1.ExportTrainingSetRequest{Features: []string{"customer_stats:nope"}, Entities: fileReq.Entities}, `"customer_stats:nope"`},
		{&exportv1.ExportTrainingSetRequest{FeatureService: "svc", Entities: &exportv1.ExportTrainingSetRequest_File{File: &exportv1.EntityFile{Content: []byte("customer_id\nc1\n"), Format: "csv"}}}, "event_timestamp"},
	} {
		stream, err := client.ExportTrainingSet(context.Background(), connect.NewRequest(tc.req))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
			stream.Close()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want InvalidArgument naming %s", tc.req, err, tc.want)
		}
	}
}

// TestExportServiceManifestsReproduce reproduces streamed exports from
// their manifests after newer rows arrived: inline rows from the manifest
// alone, an uploaded file when it is given back (and refused when it is
// missing or another file); the result is the same Arrow stream bytes.
func TestExportServiceManifestsReproduce(t *testing.T) {
	c, dir := tourSetup(t)
	base, _ := startServe(t, c, "--warm-start=false")
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	ts := func(s string) *featurestorev1.Value {
		at, _ := time.Parse(time.RFC3339, s)
		return &featurestorev1.Value{Kind: &featurestorev1.Value_TimestampValue{TimestampValue: timestamppb.New(at)}}
	}
	requests := map[string]*exportv1.ExportTrainingSetRequest{
		"upload": {FeatureService: "svc", Entities: &exportv1.ExportTrainingSetRequest_File{File: &exportv1.EntityFile{Content: []byte(tourEntities), Format: "csv", Name: "entities.csv"}}},
		"inline": {Features: []string{"customer_stats:orders_7d", "customer_stats:segment"}, Entities: &exportv1.ExportTrainingSetRequest_Inline{Inline: &exportv1.InlineEntities{Rows: []*exportv1.InlineRow{
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "event_timestamp": ts("2024-01-02T12:00:00Z")}},
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c3"), "event_timestamp": ts("2024-01-01T00:00:00Z")}},
		}}}},
	}
	manifests := map[string]string{}
	before := map[string]string{}
	for kind, req := range requests {
		csv, m := streamCSV(t, base, req)
		if m["entities"].(map[string]any)["kind"] != kind {
			t.Fatalf("%s export: manifest entities %v", kind, m["entities"])
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		manifests[kind] = filepath.Join(dir, kind+".manifest.json")
		writeFile(t, manifests[kind], string(b))
		before[kind] = csv
	}
	// Newer rows arrive: a fresh export sees them.
	more := filepath.Join(dir, "more.csv")
	writeFile(t, more, "customer_id,event_ts,created_ts,orders_7d,spend,segment\nc1,2024-01-02 06:00:00,2024-01-02 06:00:00,99,9.9,new\nc3,2023-12-30 00:00:00,2023-12-30 00:00:00,5,5,old\n")
	c.ok("ingest", "customer_stats", more)
	if fresh, _ := streamCSV(t, base, requests["inline"]); fresh == before["inline"] {
		t.Fatal("the newer rows changed nothing; the test proves nothing")
	}

	out := filepath.Join(dir, "inline.arrows")
	mustContain(t, c.ok("export", "--manifest", manifests["inline"], "--out", out), "reproduced")
	if got := arrowStreamCSV(t, out); got != before["inline"] {
		t.Fatalf("reproduced inline export:\n%s\nwas\n%s", got, before["inline"])
	}

	// The stream's bytes are not Parquet or CSV: a file named so is refused.
	for _, name := range []string{"inline.parquet", "inline.csv"} {
		mustContain(t, c.fails("export", "--manifest", manifests["inline"], "--out", filepath.Join(dir, name)), "Arrow IPC stream", ".arrows")
		assertNoFile(t, filepath.Join(dir, name))
	}

	out = filepath.Join(dir, "upload.arrows")
	mustContain(t, c.fails("export", "--manifest", manifests["upload"], "--out", out), "uploaded", "--entities", "entities.csv")
	other := filepath.Join(dir, "other.csv")
	writeFile(t, other, tourEntities+"c1,9007199254740993,2024-01-03 00:00:00,1\n")
	mustContain(t, c.fails("export", "--manifest", manifests["upload"], "--entities", other, "--out", out), "not the one exported")
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused reproduction left a file")
	}
	mustContain(t, c.ok("export", "--manifest", manifests["upload"], "--entities", filepath.Join(dir, "data/entities.csv"), "--out", out), "reproduced")
	if got := arrowStreamCSV(t, out); got != before["upload"] {
		t.Fatalf("reproduced upload export:\n%s\nwas\n%s", got, before["upload"])
	}
}

// arrowStreamCSV renders an Arrow IPC stream file as CSV.
func arrowStreamCSV(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return ipcCSV(t, path, bytes.NewReader(b))
}
