package logfile

import (
	"bytes"
	"io"
)

// backwardChunk is how much of a file a backward read takes at a time.
const backwardChunk = 256 << 10

// backward reads the lines of a file from its last to its first, as a
// newest-first log (logcli's default) is read into time order without
// holding it: memory is bounded by limit and one chunk. A line longer
// than limit is passed over and reported as tooLong.
type backward struct {
	r       io.ReaderAt
	off     int64  // where the bytes not yet read end
	buf     []byte // read, not yet returned: whole lines, the first perhaps cut
	limit   int
	tooLong bool // the line being gathered at buf's start is over limit
}

func newBackward(r io.ReaderAt, size int64, limit int) *backward {
	return &backward{r: r, off: size, limit: limit}
}

// next returns the previous line, without its line ending; io.EOF after
// the first line of the file.
func (b *backward) next() (text string, tooLong bool, err error) {
	for {
		// A whole line: the text after the last newline of buf, unless
		// that newline ends the file's last line (trailing, nothing after).
		if i := bytes.LastIndexByte(b.buf, '\n'); i >= 0 {
			line := b.buf[i+1:]
			b.buf = b.buf[:i]
			long := b.tooLong || len(line) > b.limit+1
			b.tooLong = false
			if len(line) == 0 && !long {
				continue // an empty line, or the end of the file
			}
			if long {
				return "", true, nil
			}
			return string(bytes.TrimRight(line, "\r")), false, nil
		}
		if b.off == 0 {
			// The file's first line.
			line, long := b.buf, b.tooLong || len(b.buf) > b.limit+1
			b.buf, b.tooLong = nil, false
			if long {
				return "", true, io.EOF
			}
			if len(line) == 0 {
				return "", false, io.EOF
			}
			return string(bytes.TrimRight(line, "\r")), false, io.EOF
		}
		if b.tooLong || len(b.buf) > b.limit+1 {
			// No newline within limit: the line is too long. Keep
			// nothing of it; its start is further back.
			b.buf, b.tooLong = b.buf[:0], true
		}
		n := int64(backwardChunk)
		if b.off < n {
			n = b.off
		}
		chunk := make([]byte, n, int(n)+len(b.buf))
		if _, err := b.r.ReadAt(chunk, b.off-n); err != nil && err != io.EOF {
			return "", false, err
		}
		b.off -= n
		b.buf = append(chunk, b.buf...)
	}
}
