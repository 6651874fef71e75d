package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// result is what one soak measured.
type result struct {
	rec         *recorder
	samples     []sample         // taken while the load ran
	begin       metrics          // the server's /metrics as the load started
	beginCPU    [2]time.Duration // CPU time of the server and of the soak itself as the load started
	selfCPU     time.Duration    // the soak's own CPU time during the load
	final       sample           // after the last request was answered
	elapsed     time.Duration
	interrupted bool
	loadAvg     [2]string // how busy the machine was as the load started and ended (loadAvg)
	stop        stopResult
	serverLog   logSummary
}

// soak runs the load for cfg.duration (or until ctx ends), sampling the
// server every cfg.interval.
func soak(ctx context.Context, cfg config, w *world) *result {
	sctx := context.WithoutCancel(ctx)
	res := &result{loadAvg: [2]string{loadAvg()}}
	var err error
	if res.begin, err = scrape(sctx, w.server.base); err != nil {
		logf("reading /metrics before the load: %v", err)
	}
	res.beginCPU[0], _ = procCPU(w.server.cmd.Process.Pid)
	res.beginCPU[1] = ownCPU()
	start := time.Now().Add(50 * time.Millisecond)
	res.rec = newRecorder(start)
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
	for {
		select {
		case <-tick.C:
			s := w.takeSample(sctx, res.rec)
			printSample(s, res.previous())
			res.samples = append(res.samples, s)
		case <-done:
			res.elapsed = time.Since(start)
			res.selfCPU = ownCPU() - res.beginCPU[1]
			res.final = w.takeSample(sctx, res.rec)
			printSample(res.final, res.previous())
			res.loadAvg[1] = loadAvg()
			return res
		}
	}
}

// ownCPU is the CPU time (user and system) the soak has used.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
	if s.pressure >= 0 {
		fmt.Fprintf(&b, " | machine CPU pressure %.0f%%", s.pressure)
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

// loadAvg is how busy the machine is: its 1, 5 and 15 minute load
// averages, and the share of the last minute some task waited for a CPU
// (/proc/pressure/cpu, when the kernel has it). Other processes on a
// shared machine move the soak's figures.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if err != nil || len(f) < 3 {
		return "?"
	}
	out := "load average " + strings.Join(f[:3], " ")
	if psi, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		if m := cpuPressure.FindSubmatch(psi); m != nil {
			out += fmt.Sprintf(", CPU pressure %s%% (some, 60 s)", m[1])
		}
	}
	return out
}

var cpuPressure = regexp.MustCompile(`some avg10=\S+ avg60=(\S+)`)

// cpuPressure10 is the share (0-100) of the last 10 s some task of the
// machine waited for a CPU, -1 when the kernel does not say.
func cpuPressure10() float64 {
	psi, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return -1
	}
	m := cpuPressure10s.FindSubmatch(psi)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return -1
	}
	return v
}

var cpuPressure10s = regexp.MustCompile(`some avg10=(\S+)`)
