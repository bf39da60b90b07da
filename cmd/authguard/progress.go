package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// progress reports how far through a large file a read is, on a terminal.
type progress struct {
	r     io.Reader
	n     atomic.Int64
	total int64
	name  string
	out   io.Writer
	last  time.Time
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	done := p.n.Add(int64(n))
	if now := time.Now(); now.Sub(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = now
		fmt.Fprintf(p.out, "\rreading %s: %3d%% of %d MiB", p.name, done*100/max(p.total, 1), p.total>>20)
		if err == io.EOF {
			fmt.Fprintln(p.out)
		}
	}
	return n, err
}

// withProgress wraps f in a progress display when stderr is a terminal and
// the file is large enough to wait for.
func withProgress(f *os.File, name string, stderr io.Writer) io.Reader {
	st, err := f.Stat()
	tty, ok := stderr.(*os.File)
	if err != nil || !ok || st.Size() < 16<<20 {
		return f
	}
	if ts, err := tty.Stat(); err != nil || ts.Mode()&os.ModeCharDevice == 0 {
		return f
	}
	return &progress{r: f, total: st.Size(), name: name, out: stderr}
}
