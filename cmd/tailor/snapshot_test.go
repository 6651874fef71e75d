package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportManifestReproduces exports a training set, stores newer rows
// (a later event for a customer, a new customer), and reproduces the
// export from its manifest: byte for byte the same file, while a fresh
// export sees the new rows. A changed entity file is refused.
func TestExportManifestReproduces(t *testing.T) {
	c, dir := tourSetup(t)
	ents := filepath.Join(dir, "data/entities.csv")
	for _, format := range []string{"parquet", "csv", "arrow"} {
		out := filepath.Join(dir, "train."+format)
		got := c.ok("export", "--entities", ents, "--service", "svc", "--out", out)
		mustContain(t, got, "snapshot snap-", "definitions v1", out+".manifest.json")
		var m struct {
			SnapshotID         string `json:"snapshot_id"`
			DefinitionsVersion uint64 `json:"definitions_version"`
			Features           []struct{ Ref, Type, Column string }
			Entities           struct{ Kind, Path, SHA256 string }
			Rows               int64
			TimeRange          [2]string `json:"time_range"`
			ContentSHA256      string    `json:"content_sha256"`
			TailorVersion      string    `json:"tailor_version"`
		}
		b, err := os.ReadFile(out + ".manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.DefinitionsVersion != 1 || m.Rows != 6 || len(m.Features) != 4 || m.Features[0].Ref != "customer_stats:orders_7d" || m.Features[0].Type != "int64" ||
			m.Entities.Kind != "file" || len(m.Entities.SHA256) != 64 || len(m.ContentSHA256) != 64 || m.TimeRange[0] != "2023-12-31T00:00:00Z" || m.TailorVersion == "" {
			t.Fatalf("manifest %s", b)
		}
		if got := strings.TrimSpace(c.sql("SELECT count() FROM " + c.db + ".snapshots WHERE snapshot_id = '" + m.SnapshotID + "'")); got != "1" {
			t.Fatalf("snapshot %s recorded %s times in ClickHouse", m.SnapshotID, got)
		}
		if format == "parquet" {
			// Newer rows arrive after the snapshot.
			more := filepath.Join(dir, "more.csv")
			writeFile(t, more, "customer_id,event_ts,created_ts,orders_7d,spend,segment\nc1,2024-01-02 06:00:00,2024-01-02 06:00:00,99,9.9,new\nc3,2023-12-30 00:00:00,2023-12-30 00:00:00,5,5,old\n")
			c.ok("ingest", "customer_stats", more)
		}
		fresh := filepath.Join(dir, "fresh."+format)
		c.ok("export", "--entities", ents, "--service", "svc", "--out", fresh)
		again := filepath.Join(dir, "again."+format)
		mustContain(t, c.ok("export", "--manifest", out+".manifest.json", "--out", again), "reproduced", m.SnapshotID, m.ContentSHA256)
		if readFile(t, again) != readFile(t, out) {
			t.Fatalf("%s: the reproduction differs from the original", format)
		}
		if format == "parquet" && readFile(t, fresh) == readFile(t, out) {
			t.Fatalf("a fresh export does not see the rows stored after the snapshot")
		}
	}
	// The entity file changed: the snapshot cannot be reproduced.
	writeFile(t, ents, tourEntities+"c1,9007199254740993,2024-01-05 00:00:00,1\n")
	mustContain(t, c.fails("export", "--manifest", filepath.Join(dir, "train.csv.manifest.json"), "--out", filepath.Join(dir, "x.csv")), "entity file", "changed since the export")
	mustContain(t, c.fails("export", "--manifest", filepath.Join(dir, "train.csv.manifest.json"), "--out", filepath.Join(dir, "x.csv"), "--service", "svc"), "give only --out")
	mustContain(t, c.fails("export", "--manifest", filepath.Join(dir, "nope.json"), "--out", filepath.Join(dir, "x.csv")), "nope.json")
	// The same bytes come only in the recorded format.
	mustContain(t, c.fails("export", "--manifest", filepath.Join(dir, "train.parquet.manifest.json"), "--out", filepath.Join(dir, "x.csv")), "exported as parquet", ".parquet file")
	mustContain(t, c.fails("export", "--manifest", filepath.Join(dir, "train.parquet.manifest.json"), "--out", filepath.Join(dir, "x.parquet"), "--format", "csv"), "--format csv", "exported as parquet")
}
