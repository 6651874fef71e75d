package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress prints "stage: N rows (R rows/s)" on one terminal line, at most
// ten times a second; it prints nothing when errOut is not a terminal.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	start time.Time
	last  time.Time
	stage string
	shown bool
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), start: time.Now()}
}

// update reports rows done in stage; a new stage restarts the clock.
func (p *progress) update(stage string, rows int64) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if stage != p.stage {
		p.stage, p.start = stage, now
	} else if now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	if el < 0.05 {
		fmt.Fprintf(p.w, "\r\033[K%s: %d rows", stage, rows)
	} else {
		fmt.Fprintf(p.w, "\r\033[K%s: %d rows (%.0f rows/s, %.1fs)", stage, rows, float64(rows)/el, el)
	}
	p.shown = true
}

// done ends the progress line.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// reset restarts the clock for a new stage or file.
func (p *progress) reset() {
	p.mu.Lock()
	p.start, p.last = time.Now(), time.Time{}
	p.mu.Unlock()
}
