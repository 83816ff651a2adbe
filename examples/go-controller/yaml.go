package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A strict parser for the subset of YAML that kubeconfig files use (the Go standard library
// has no YAML): block mappings and block sequences (also a sequence at its key's indentation,
// as kubectl writes them), plain, 'single' and "double" quoted scalars, the empty flow
// collections {} and [], comments and a leading "---". JSON (a YAML subset) is read with
// encoding/json. Anything else (anchors, aliases, tags, block scalars, multi-line plain
// scalars, non-empty flow collections, several documents) is an error naming the line, never
// a silent misreading: credentials must not be guessed.
//
// Values come back as map[string]interface{}, []interface{}, string, bool or nil. Plain
// scalars stay strings except true/false (booleans) and null/~ (nil); a kubeconfig has no
// numeric field that matters here.

type yamlLine struct {
	num    int // 1-based, for errors
	indent int
	text   string
}

type yamlError struct {
	line int
	msg  string
}

func (e *yamlError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func parseYAML(src []byte) (interface{}, error) {
	trimmed := strings.TrimSpace(string(src))
	if strings.HasPrefix(trimmed, "{") {
		var v interface{}
		if err := json.Unmarshal([]byte(trimmed), &v); err != nil {
			return nil, err
		}
		return v, nil
	}
	if !utf8.Valid(src) {
		return nil, fmt.Errorf("not UTF-8")
	}
	var lines []yamlLine
	for i, raw := range strings.Split(strings.ReplaceAll(string(src), "\r\n", "\n"), "\n") {
		lead := raw[:len(raw)-len(strings.TrimLeft(raw, " \t"))]
		if strings.Contains(lead, "\t") && strings.TrimSpace(raw) != "" {
			return nil, &yamlError{i + 1, "tab in indentation"}
		}
		text := stripComment(raw)
		if strings.TrimSpace(text) == "" {
			continue
		}
		indent := len(text) - len(strings.TrimLeft(text, " "))
		text = strings.TrimRight(text[indent:], " \t")
		if text == "---" && len(lines) == 0 && indent == 0 {
			continue
		}
		if text == "---" || text == "..." {
			return nil, &yamlError{i + 1, "more than one document"}
		}
		lines = append(lines, yamlLine{num: i + 1, indent: indent, text: text})
	}
	if len(lines) == 0 {
		return nil, nil
	}
	p := &yamlParser{lines: lines}
	v, err := p.block(lines[0].indent)
	if err != nil {
		return nil, err
	}
	if p.i < len(p.lines) {
		l := p.lines[p.i]
		return nil, &yamlError{l.num, "unexpected indentation"}
	}
	return v, nil
}

// stripComment removes a comment: '#' at the start or after a space, outside quotes.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				if quote == '\'' && i+1 < len(s) && s[i+1] == '\'' {
					i++
				} else {
					quote = 0
				}
			} else if quote == '"' && c == '\\' {
				i++
			}
		case c == '"' || c == '\'':
			// Quotes open a scalar only at its start (after "key: ", "- " or at the line's start).
			if i == 0 || s[i-1] == ' ' {
				quote = c
			}
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

type yamlParser struct {
	lines []yamlLine
	i     int
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

func (p *yamlParser) block(indent int) (interface{}, error) {
	if isSeqItem(p.lines[p.i].text) {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) mapping(indent int) (interface{}, error) {
	out := map[string]interface{}{}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, &yamlError{l.num, "unexpected indentation"}
		}
		if isSeqItem(l.text) {
			return nil, &yamlError{l.num, "a sequence item where a mapping key was expected"}
		}
		key, rest, err := splitKey(l)
		if err != nil {
			return nil, err
		}
		if _, dup := out[key]; dup {
			return nil, &yamlError{l.num, fmt.Sprintf("duplicate key %q", key)}
		}
		p.i++
		var v interface{}
		if rest == "" {
			v, err = p.nested(indent, true)
		} else {
			v, err = scalar(rest, l.num)
		}
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

// nested parses the value of a key (or "- ") with nothing after it: a deeper block, a
// sequence at the same indentation (keys only), or nil.
func (p *yamlParser) nested(indent int, sameIndentSeq bool) (interface{}, error) {
	if p.i >= len(p.lines) {
		return nil, nil
	}
	next := p.lines[p.i]
	if next.indent > indent || (sameIndentSeq && next.indent == indent && isSeqItem(next.text)) {
		if sameIndentSeq && next.indent == indent {
			return p.sequence(indent)
		}
		return p.block(next.indent)
	}
	return nil, nil
}

func (p *yamlParser) sequence(indent int) (interface{}, error) {
	out := []interface{}{}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent || (l.indent == indent && !isSeqItem(l.text)) {
			break
		}
		if l.indent > indent {
			return nil, &yamlError{l.num, "unexpected indentation"}
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		if rest == "" {
			p.i++
			v, err := p.nested(indent, false)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			continue
		}
		if _, _, err := splitKey(yamlLine{num: l.num, text: rest}); err == nil && !isQuotedScalar(rest) {
			// "- key: value": a mapping whose keys sit where "key" starts.
			offset := len(l.text) - len(rest)
			p.lines[p.i] = yamlLine{num: l.num, indent: l.indent + offset, text: rest}
			v, err := p.mapping(l.indent + offset)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			continue
		}
		if isSeqItem(rest) {
			return nil, &yamlError{l.num, "nested inline sequences are not supported"}
		}
		v, err := scalar(rest, l.num)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.i++
	}
	return out, nil
}

func isQuotedScalar(s string) bool {
	if len(s) < 2 || (s[0] != '"' && s[0] != '\'') {
		return false
	}
	_, n, err := quoted(s, 0)
	return err == nil && n == len(s)
}

// splitKey splits "key: rest" (or "key:"); the key may be quoted.
func splitKey(l yamlLine) (key, rest string, err error) {
	t := l.text
	if t[0] == '"' || t[0] == '\'' {
		k, n, err := quoted(t, l.num)
		if err != nil {
			return "", "", err
		}
		after := t[n:]
		if after == ":" || strings.HasPrefix(after, ": ") {
			return k, strings.TrimSpace(strings.TrimPrefix(after, ":")), nil
		}
		return "", "", &yamlError{l.num, "expected ':' after a quoted key"}
	}
	i := strings.Index(t, ": ")
	if i < 0 {
		if strings.HasSuffix(t, ":") {
			i = len(t) - 1
		} else {
			return "", "", &yamlError{l.num, fmt.Sprintf("expected 'key: value', found %q", t)}
		}
	}
	key = t[:i]
	if strings.ContainsAny(key[:1], "[]{}&*!|>%@`?") {
		return "", "", &yamlError{l.num, fmt.Sprintf("unsupported YAML in key %q", key)}
	}
	return key, strings.TrimSpace(t[i+1:]), nil
}

// scalar parses a value on one line.
func scalar(s string, line int) (interface{}, error) {
	switch s[0] {
	case '"', '\'':
		v, n, err := quoted(s, line)
		if err != nil {
			return nil, err
		}
		if n != len(s) {
			return nil, &yamlError{line, "text after a quoted scalar"}
		}
		return v, nil
	case '{', '[':
		switch strings.ReplaceAll(s, " ", "") {
		case "{}":
			return map[string]interface{}{}, nil
		case "[]":
			return []interface{}{}, nil
		}
		return nil, &yamlError{line, "non-empty flow collections are not supported"}
	case '&', '*', '!', '|', '>', '%', '@', '`':
		return nil, &yamlError{line, fmt.Sprintf("unsupported YAML (anchor, alias, tag or block scalar): %q", s)}
	}
	if strings.Contains(s, ": ") {
		return nil, &yamlError{line, fmt.Sprintf("a mapping inside a plain scalar: %q", s)}
	}
	switch s {
	case "true", "True", "TRUE":
		return true, nil
	case "false", "False", "FALSE":
		return false, nil
	case "null", "Null", "NULL", "~":
		return nil, nil
	}
	return s, nil
}

// quoted reads a quoted scalar at the start of s; returns it and the bytes consumed.
func quoted(s string, line int) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		if q == '\'' {
			if c == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				return b.String(), i + 1, nil
			}
			b.WriteByte(c)
			continue
		}
		switch c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 >= len(s) {
				return "", 0, &yamlError{line, "unterminated escape"}
			}
			i++
			switch e := s[i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			case '"', '\\', '/', ' ':
				b.WriteByte(e)
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if i+n >= len(s) {
					return "", 0, &yamlError{line, "short escape"}
				}
				r, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
				if err != nil {
					return "", 0, &yamlError{line, "bad escape"}
				}
				b.WriteRune(rune(r))
				i += n
			default:
				return "", 0, &yamlError{line, fmt.Sprintf("unsupported escape \\%c", e)}
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, &yamlError{line, "unterminated quoted scalar"}
}
