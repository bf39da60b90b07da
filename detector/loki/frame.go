package loki

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeFrame reads a tail frame without reflection: frames arrive
// continuously and their entries are the hot path.
// It accepts any valid JSON of the frame's shape, skipping unknown fields.
func decodeFrame(msg []byte) (frame, error) {
	d := frameDecoder{b: msg}
	var f frame
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "streams":
			return d.streams(&f.Streams)
		case "dropped_entries":
			return d.array(func() error {
				var ts string
				err := d.object(func(key []byte) error {
					if string(key) == "timestamp" {
						v, err := d.str()
						ts = v
						return err
					}
					return d.skip()
				})
				f.DroppedEntries = append(f.DroppedEntries, struct {
					Timestamp string `json:"timestamp"`
				}{ts})
				return err
			})
		}
		return d.skip()
	})
	if err != nil {
		return frame{}, err
	}
	d.ws()
	if d.i != len(d.b) {
		return frame{}, d.errorf("data after the frame")
	}
	return f, nil
}

// streams reads a list of streams: [{"stream":{...},"values":[["ts","line"],...]},...].
func (d *frameDecoder) streams(out *[]wireStream) error {
	return d.array(func() error {
		var s wireStream
		err := d.object(func(key []byte) error {
			switch string(key) {
			case "stream":
				s.Stream = map[string]string{}
				return d.object(func(k []byte) error {
					name := string(k)
					v, err := d.str()
					s.Stream[name] = v
					return err
				})
			case "values":
				return d.array(func() error {
					var e [2]string
					i := 0
					err := d.array(func() error {
						v, err := d.str()
						if i < 2 {
							e[i] = v
						}
						i++
						return err
					})
					if err == nil && i < 2 {
						return d.errorf("an entry is not [ts, line]")
					}
					s.Values = append(s.Values, e)
					return err
				})
			}
			return d.skip()
		})
		*out = append(*out, s)
		return err
	})
}

// decodeQueryResult reads a query_range answer's status and result streams.
func decodeQueryResult(body []byte) (status string, result []wireStream, err error) {
	d := frameDecoder{b: body}
	err = d.object(func(key []byte) error {
		switch string(key) {
		case "status":
			v, err := d.str()
			status = v
			return err
		case "data":
			return d.object(func(key []byte) error {
				if string(key) == "result" {
					return d.streams(&result)
				}
				return d.skip()
			})
		}
		return d.skip()
	})
	return status, result, err
}

type frameDecoder struct {
	b       []byte
	i       int
	scratch []byte // reused for unescaping
}

func (d *frameDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("frame offset %d: %s", d.i, fmt.Sprintf(format, args...))
}

func (d *frameDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *frameDecoder) expect(c byte) error {
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != c {
		return d.errorf("want %q", c)
	}
	d.i++
	return nil
}

// peek returns the next non-space byte, or 0 at the end.
func (d *frameDecoder) peek() byte {
	d.ws()
	if d.i >= len(d.b) {
		return 0
	}
	return d.b[d.i]
}

// object calls field for each key, positioned at its value; a null object
// is an empty one. The key is only valid during the call.
func (d *frameDecoder) object(field func(key []byte) error) error {
	if d.null() {
		return nil
	}
	if err := d.expect('{'); err != nil {
		return err
	}
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.view()
		if err != nil {
			return err
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.errorf("want , or }")
		}
	}
}

// array calls elem for each element; a null array is an empty one.
func (d *frameDecoder) array(elem func() error) error {
	if d.null() {
		return nil
	}
	if err := d.expect('['); err != nil {
		return err
	}
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.errorf("want , or ]")
		}
	}
}

func (d *frameDecoder) null() bool {
	if d.peek() == 'n' && len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// str reads a JSON string into a new string.
func (d *frameDecoder) str() (string, error) {
	v, err := d.view()
	return string(v), err
}

// view reads a JSON string without copying it when it has no escapes; an
// escaped one is unescaped into the decoder's scratch space. Either way the
// bytes are only valid until the next read.
func (d *frameDecoder) view() ([]byte, error) {
	if err := d.expect('"'); err != nil {
		return nil, err
	}
	start := d.i
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			v := d.b[start:d.i]
			d.i++
			return v, nil
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return nil, d.errorf("control character in a string")
		default:
			d.i++
		}
	}
	return nil, d.errorf("unterminated string")
}

func (d *frameDecoder) escaped(start int) ([]byte, error) {
	out := append(d.scratch[:0], d.b[start:d.i]...)
	defer func() { d.scratch = out[:0] }()
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out, nil
		case c < 0x20:
			return nil, d.errorf("control character in a string")
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.b) {
			break
		}
		esc := d.b[d.i+1]
		d.i += 2
		switch esc {
		case '"', '\\', '/':
			out = append(out, esc)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, d.errorf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(utf8.RuneError)
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					d.i += 2
					if lo, ok := d.hex4(); ok {
						r2 = lo
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, d.errorf("bad escape \\%c", esc)
		}
	}
	return nil, d.errorf("unterminated string")
}

func (d *frameDecoder) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(d.b[d.i:d.i+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	d.i += 4
	return rune(v), true
}

// skip passes over any JSON value.
func (d *frameDecoder) skip() error {
	switch d.peek() {
	case '{':
		return d.object(func([]byte) error { return d.skip() })
	case '[':
		return d.array(d.skip)
	case '"':
		_, err := d.str()
		return err
	case 0:
		return errors.New("frame: unexpected end")
	}
	// A number, true, false or null: up to the next delimiter.
	start := d.i
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if d.i == start {
				return d.errorf("want a value")
			}
			return nil
		}
		d.i++
	}
	return nil
}
