package client

import (
	"errors"
	"github.com/rideshare/rideshare"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// errNotFlat means an answer is not the orchestrator's usual shape; decodeReadResult then
// leaves it to encoding/json.
var errNotFlat = errors.New("not a flat read answer")

// decodeReadResult parses a read answer, {"rows":[{"col":value,…},…],"seq":n}, whose values
// are integers and strings (what the store returns), into res, with integers as int64. It is
// the users' and rides' hottest decoding, and encoding/json spends most of its time there on
// reflection and json.Number. Anything else (other keys' order, floats, nesting, nulls) gives
// errNotFlat and the caller falls back to encoding/json, so the two can only differ in speed.
func decodeReadResult(data []byte, res *ReadResult) error {
	p := &flatParser{b: data}
	p.ws()
	if !p.lit('{') {
		return errNotFlat
	}
	seenRows, seenSeq := false, false
	for first := true; ; first = false {
		p.ws()
		if p.lit('}') {
			break
		}
		if !first && (!p.lit(',') || !p.wsThen()) {
			return errNotFlat
		}
		key, ok := p.str()
		if !ok {
			return errNotFlat
		}
		p.ws()
		if !p.lit(':') {
			return errNotFlat
		}
		p.ws()
		switch {
		case key == "rows" && !seenRows:
			rows, ok := p.rows()
			if !ok {
				return errNotFlat
			}
			res.Rows, seenRows = rows, true
		case key == "seq" && !seenSeq:
			n, ok := p.int()
			if !ok || n < 0 {
				return errNotFlat
			}
			res.Seq, seenSeq = uint64(n), true
		default:
			return errNotFlat
		}
	}
	p.ws()
	if p.i != len(p.b) {
		return errNotFlat
	}
	return nil
}

type flatParser struct {
	b []byte
	i int
}

func (p *flatParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// wsThen skips whitespace and reports that input remains.
func (p *flatParser) wsThen() bool { p.ws(); return p.i < len(p.b) }

func (p *flatParser) lit(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// rows parses an array of flat objects.
func (p *flatParser) rows() ([]rideshare.Row, bool) {
	if !p.lit('[') {
		return nil, false
	}
	rows := []rideshare.Row{}
	for first := true; ; first = false {
		p.ws()
		if p.lit(']') {
			return rows, true
		}
		if !first {
			if !p.lit(',') {
				return nil, false
			}
			p.ws()
		}
		row, ok := p.object()
		if !ok {
			return nil, false
		}
		rows = append(rows, row)
	}
}

// object parses {"key": int or string, …}. A repeated key is left to encoding/json.
func (p *flatParser) object() (rideshare.Row, bool) {
	if !p.lit('{') {
		return nil, false
	}
	row := make(rideshare.Row, 4)
	for first := true; ; first = false {
		p.ws()
		if p.lit('}') {
			return row, true
		}
		if !first {
			if !p.lit(',') {
				return nil, false
			}
			p.ws()
		}
		key, ok := p.str()
		if !ok {
			return nil, false
		}
		if _, dup := row[key]; dup {
			return nil, false
		}
		p.ws()
		if !p.lit(':') {
			return nil, false
		}
		p.ws()
		if p.i >= len(p.b) {
			return nil, false
		}
		if p.b[p.i] == '"' {
			s, ok := p.str()
			if !ok {
				return nil, false
			}
			row[key] = s
		} else {
			n, ok := p.int()
			if !ok {
				return nil, false
			}
			row[key] = n
		}
	}
}

// int parses a JSON integer that fits in int64 (no fraction, no exponent).
func (p *flatParser) int() (int64, bool) {
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == digits || (p.b[digits] == '0' && p.i-digits > 1) {
		return 0, false // no digits, or a leading zero JSON does not allow
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false // a float: encoding/json keeps it as json.Number
	}
	n, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
	return n, err == nil
}

// str parses a JSON string, decoding escapes as encoding/json does (invalid UTF-8 and lone
// surrogates become U+FFFD).
func (p *flatParser) str() (string, bool) {
	if !p.lit('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\':
			return p.slowStr(start)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				return p.slowStr(start)
			}
			p.i += size
		default:
			p.i++
		}
	}
	return "", false
}

// slowStr finishes a string that has escapes or invalid UTF-8, from its first byte at start.
func (p *flatParser) slowStr(start int) (string, bool) {
	out := make([]byte, 0, 2*(p.i-start)+16)
	out = append(out, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return "", false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
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
				r, ok := p.hex4()
				if !ok {
					return "", false
				}
				if utf16.IsSurrogate(r) {
					// A pair makes one rune; a lone surrogate is U+FFFD, as in encoding/json.
					r2 := rune(-1)
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						save := p.i
						p.i += 2
						if x, ok := p.hex4(); ok {
							r2 = x
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							out = utf8.AppendRune(out, dec)
							continue
						}
						p.i = save
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
			default:
				return "", false
			}
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(p.b[p.i:])
			out = utf8.AppendRune(out, r) // RuneError for invalid bytes, as encoding/json
			p.i += size
		default:
			out = append(out, c)
			p.i++
		}
	}
	return "", false
}

func (p *flatParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}
