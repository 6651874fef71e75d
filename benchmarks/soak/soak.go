package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// result is what one soak measured.
type result struct {
	rec         *recorder
	samples     []sample // taken while the load ran
	final       sample   // after the last request was answered
	elapsed     time.Duration
	interrupted bool
	loadAvg     [2]string // /proc/loadavg when the load started and ended
	stop        stopResult
	serverLog   logSummary
}

// soak runs the load for cfg.duration (or until ctx ends), sampling the
// server every cfg.interval.
func soak(ctx context.Context, cfg config, w *world) *result {
	start := time.Now().Add(50 * time.Millisecond)
	res := &result{rec: newRecorder(start)}
	res.loadAvg[0] = loadAvg()
	l := &loadRun{cfg: cfg, rec: res.rec,
		start: start, end: start.Add(cfg.duration)}
	var wg sync.WaitGroup
	for i := range cfg.clients {
		c := newClient(w.server.base)
		wg.Go(func() { l.client(ctx, i, c) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(cfg.interval)
	defer tick.Stop()
	sctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-tick.C:
			s := w.takeSample(sctx, res.rec)
			printSample(s, res.previous())
			res.samples = append(res.samples, s)
		case <-done:
			res.elapsed = time.Since(start)
			res.final = w.takeSample(sctx, res.rec)
			printSample(res.final, res.previous())
			res.loadAvg[1] = loadAvg()
			return res
		}
	}
}

// previous is the last sample taken, nil before the first.
func (r *result) previous() *sample {
	if len(r.samples) == 0 {
		return nil
	}
	return &r.samples[len(r.samples)-1]
}

// printSample prints one line per sample on stderr: the server's memory,
// goroutines and CPU, its tier, and each op's rate and latency since the
// previous sample.
func printSample(s sample, prev *sample) {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%4.0fs rss %s heap %s goroutines %.0f", s.at.Seconds(), mib(float64(s.rss)),
		mib(s.m.get(mHeapInuse)), s.m.get(mGoroutines))
	if prev != nil {
		dt := (s.at - prev.at).Seconds()
		hits := s.m.get(mTierHits) - prev.m.get(mTierHits)
		misses := s.m.get(mTierMisses) - prev.m.get(mTierMisses)
		fmt.Fprintf(&b, " cpu %.0f%% | tier %s hits %.0f%% read-through %.0f/s evict %.0f/s",
			100*(s.cpu-prev.cpu).Seconds()/dt, mib(s.m.get(mTierBytes)), 100*ratio(hits, hits+misses),
			(s.m.get(mReadThroughs)-prev.m.get(mReadThroughs))/dt, (s.m.get(mEvictions)-prev.m.get(mEvictions))/dt)
		b.WriteString(" |")
		for o, win := range s.ops {
			if win.answered+win.failed == 0 {
				continue
			}
			fmt.Fprintf(&b, " %s %.0f/s p99 %s", opFlags[o], float64(win.answered+win.failed)/dt, ms(win.p99))
			if win.failed > 0 {
				fmt.Fprintf(&b, " FAILED %d", win.failed)
			}
		}
	}
	if s.err != nil {
		fmt.Fprintf(&b, " | sample incomplete: %v", s.err)
	}
	logf("%s", b.String())
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// loadAvg is the machine's 1, 5 and 15 minute load averages.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
