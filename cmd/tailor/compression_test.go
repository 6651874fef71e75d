package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// parquetCodecs reads the codec of every column chunk of a Parquet file
// from its metadata.
func parquetCodecs(t *testing.T, path string) map[compress.Compression]bool {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	codecs := map[compress.Compression]bool{}
	for g := range pf.NumRowGroups() {
		rg := pf.MetaData().RowGroup(g)
		for c := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				t.Fatal(err)
			}
			codecs[cc.Compression()] = true
		}
	}
	return codecs
}

// manifestCompression reads the compression an export's manifest records.
func manifestCompression(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Format, Compression string }
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Compression
}

var compressions = []struct {
	flag     []string // the --compression flag given, if any
	recorded string   // what the manifest records
	codec    compress.Compression
}{
	{nil, "zstd", compress.Codecs.Zstd},
	{[]string{"--compression", "zstd"}, "zstd", compress.Codecs.Zstd},
	{[]string{"--compression", "snappy"}, "snappy", compress.Codecs.Snappy},
	{[]string{"--compression", "none"}, "none", compress.Codecs.Uncompressed},
}

// TestExportCompression exports Parquet with each compression: the column
// chunks use the codec asked for, the file reads back with tailor's own
// reader, the manifest records the compression, and a reproduction from
// the manifest gives the same bytes. A compression for another format, or
// an unknown one, is refused before anything is written.
func TestExportCompression(t *testing.T) {
	c, dir := tourSetup(t)
	ents := filepath.Join(dir, "data/entities.csv")
	for _, tc := range compressions {
		t.Run(tc.recorded+map[bool]string{true: " (default)"}[tc.flag == nil], func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "train.parquet")
			c.ok(append([]string{"export", "--entities", ents, "--service", "svc", "--out", out}, tc.flag...)...)
			if got := parquetCodecs(t, out); len(got) != 1 || !got[tc.codec] {
				t.Errorf("column chunks use %v, want only %v", got, tc.codec)
			}
			if _, got := toCSV(t, out); got != tourWant {
				t.Errorf("read back:\n%s\nwant:\n%s", got, tourWant)
			}
			if got := manifestCompression(t, out+".manifest.json"); got != tc.recorded {
				t.Errorf("manifest records compression %q, want %q", got, tc.recorded)
			}
			again := filepath.Join(t.TempDir(), "again.parquet")
			mustContain(t, c.ok("export", "--manifest", out+".manifest.json", "--out", again), "reproduced")
			if readFile(t, again) != readFile(t, out) {
				t.Fatal("the reproduction differs from the original")
			}
			// Naming the recorded compression is allowed; another is not.
			c.ok("export", "--manifest", out+".manifest.json", "--out", again, "--compression", tc.recorded)
			other := map[string]string{"zstd": "snappy", "snappy": "none", "none": "zstd"}[tc.recorded]
			mustContain(t, c.fails("export", "--manifest", out+".manifest.json", "--out", again, "--compression", other),
				"--compression "+other, "with "+tc.recorded+" compression", "reproduces only so")
		})
	}

	csvOut := filepath.Join(dir, "plain.csv")
	c.ok("export", "--entities", ents, "--service", "svc", "--out", csvOut)
	if got := manifestCompression(t, csvOut+".manifest.json"); got != "" {
		t.Errorf("a CSV export's manifest records compression %q", got)
	}
	mustContain(t, c.fails("export", "--manifest", csvOut+".manifest.json", "--out", filepath.Join(dir, "again.csv"), "--compression", "zstd"),
		"exported as csv", "reproduces only so")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown", []string{"--out", "x.parquet", "--compression", "gzip"}, []string{"--compression", `"gzip"`, "zstd, snappy, none"}},
		{"csv", []string{"--out", "x.csv", "--compression", "zstd"}, []string{"--compression", "Parquet files only", "csv"}},
		{"arrow", []string{"--out", "x.arrow", "--compression", "none"}, []string{"--compression", "Parquet files only", "arrow"}},
		{"format overrides the name", []string{"--out", "x.parquet", "--format", "csv", "--compression", "snappy"}, []string{"--compression", "csv"}},
		{"over a server too", []string{"--out", "x.csv", "--compression", "snappy", "--server", "http://127.0.0.1:1"}, []string{"--compression", "csv"}},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			scratch := t.TempDir()
			args := []string{"export", "--entities", ents, "--service", "svc"}
			for i, a := range tc.args {
				if i > 0 && tc.args[i-1] == "--out" {
					a = filepath.Join(scratch, a)
				}
				args = append(args, a)
			}
			mustContain(t, c.fails(args...), tc.want...)
			if entries, _ := os.ReadDir(scratch); len(entries) != 0 {
				t.Errorf("a refused export left %v", entries)
			}
		})
	}
}

// TestScoreCompression: batch scores written to Parquet use the codec
// asked for and record it; CSV and table outputs refuse a compression.
func TestScoreCompression(t *testing.T) {
	c, dir := scoreSetup(t)
	at := time.Now().UTC().Format(time.RFC3339)
	ents := filepath.Join(dir, "entities.csv")
	writeFile(t, ents, "customer_id\nc1\nc2\n")
	for _, tc := range compressions {
		t.Run(tc.recorded, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "scores.parquet")
			got := c.ok(append([]string{"score", "--model", "next_product", "--entities", ents, "--at", at, "--out", out}, tc.flag...)...)
			mustContain(t, got, "2 entities scored")
			id := regexp.MustCompile(`snapshot (snap-\S+)`).FindStringSubmatch(got)
			if id == nil {
				t.Fatalf("no snapshot id in %q", got)
			}
			var m struct{ Format, Compression string }
			if err := json.Unmarshal([]byte(c.sql("SELECT manifest FROM "+c.db+".snapshots WHERE snapshot_id = '"+id[1]+"' FORMAT TSVRaw")), &m); err != nil {
				t.Fatal(err)
			}
			if m.Format != "parquet" || m.Compression != tc.recorded {
				t.Errorf("the run's record says %+v, want parquet with %s", m, tc.recorded)
			}
			if codecs := parquetCodecs(t, out); len(codecs) != 1 || !codecs[tc.codec] {
				t.Errorf("column chunks use %v, want only %v", codecs, tc.codec)
			}
			if _, text := toCSV(t, out); len(text) == 0 {
				t.Error("the scores read back empty")
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"csv", []string{"--out", filepath.Join(dir, "s.csv"), "--compression", "zstd"}, []string{"--compression", "Parquet files only", "csv"}},
		{"unknown", []string{"--out", filepath.Join(dir, "s.parquet"), "--compression", "brotli"}, []string{"--compression", "zstd, snappy, none"}},
		{"table", []string{"--table", "scores", "--compression", "snappy"}, []string{"--compression", "--table"}},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			mustContain(t, c.fails(append([]string{"score", "--model", "next_product", "--entities", ents, "--at", at}, tc.args...)...), tc.want...)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "s.csv")); err == nil {
		t.Error("a refused run left its output")
	}
}
