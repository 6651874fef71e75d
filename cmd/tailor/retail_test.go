package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trainMetric reads a "name model popularity" line of tailor train's output.
func trainMetric(t *testing.T, out, name string) (model, popularity float64) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == name {
			fmt.Sscan(f[1], &model)
			fmt.Sscan(f[2], &popularity)
			return model, popularity
		}
	}
	t.Fatalf("no %s in:\n%s", name, out)
	return 0, 0
}

// TestRetailLoop runs the loop of the demo on a small generated world:
// the window feature repo, training sets exported with the example label
// queries, and the three models trained, measured against popularity and
// registered with the snapshot as lineage.
func TestRetailLoop(t *testing.T) {
	c := newCLI(t)
	mustContain(t, c.ok("generate", "retail", "--customers", "3000", "--days", "150", "--end", "2026-11-01", "--seed", "4"), "3000 customers")
	c.ok("apply", filepath.Join("..", "..", "examples", "retail", "features"))
	dir := t.TempDir()
	base, _ := startServe(t, c, "--warm-start=false")
	outs := map[string]string{}
	for _, task := range []string{"next_product", "timing", "channel"} {
		sql, err := os.ReadFile(filepath.Join("..", "..", "examples", "retail", "labels", task+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		set := filepath.Join(dir, task+".parquet")
		c.ok("export", "--entities-sql", string(sql), "--service", task, "--out", set)
		outs[task] = c.ok("train", strings.ReplaceAll(task, "_", "-"), "--export", set, "--service", task, "--server", base, "--epochs", "20", "--learning-rate", "0.01")
		mustContain(t, outs[task], "registered "+task+" version 1")
	}
	if hit, pop := trainMetric(t, outs["next_product"], "hit_at_5"); hit < 2*pop {
		t.Errorf("next product hit@5 %.3f, popularity %.3f: want at least twice\n%s", hit, pop, outs["next_product"])
	}
	if mae, pop := trainMetric(t, outs["timing"], "mae_days"); mae >= pop {
		t.Errorf("timing MAE %.2f days, popularity %.2f\n%s", mae, pop, outs["timing"])
	}
	if acc, pop := trainMetric(t, outs["channel"], "accuracy"); acc < pop+0.1 {
		t.Errorf("channel accuracy %.3f, popularity %.3f\n%s", acc, pop, outs["channel"])
	}
	described := c.ok("models", "--server", base, "describe", "next_product")
	mustContain(t, described, "snap-", "hit_at_5", "logistic_regression")
	// A set exported without a service's features is refused, naming them;
	// one that holds them trains on just them.
	mustContain(t, c.fails("train", "channel", "--export", filepath.Join(dir, "timing.parquet"), "--service", "channel", "--out", dir),
		`lacks feature(s) customer_engagement:`, `of feature service "channel"`, `exported with feature service "timing"`)
	narrowed := c.ok("train", "next-product", "--export", filepath.Join(dir, "next_product.parquet"), "--service", "timing", "--out", dir, "--epochs", "2")
	mustContain(t, narrowed, "next_product: next-product")
	if spec := readFile(t, filepath.Join(dir, "next_product.yaml")); strings.Contains(spec, "customer_views:last_viewed") || !strings.Contains(spec, "customer_views:views_7d") {
		t.Errorf("trained on the timing service's features? model.yaml:\n%s", spec)
	}
}
