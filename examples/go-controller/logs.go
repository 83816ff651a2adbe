package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"time"
)

// Log lines in the shapes the Rust controller's tracing-subscriber writes, because the
// conformance suite, the demo and operators' log pipelines parse them (the proof that active
// windows never overlap is made from the logs).
//
// JSON (--log-format json), one object per line:
//
//	{"timestamp":"2026-11-24T14:54:18.807083Z","level":"INFO","fields":{"message":"active window started","term":4},"target":"newresource_controller_go::workers"}
//
// Text (the default):
//
//	2026-11-24T14:54:18.807083Z  INFO newresource_controller_go::workers: active window started term=4
//
// Every line is one Write under a lock, unbuffered: lines never interleave, and a line logged
// before the process is killed is not lost.

// rootTarget prefixes every target (the Rust controller's is newresource_controller).
const rootTarget = "newresource_controller_go"

var levels = map[string]int{"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}

// Logger writes lines for one target.
type Logger struct {
	out    *logOutput
	target string
}

type logOutput struct {
	mu       sync.Mutex
	w        io.Writer
	json     bool
	minLevel int
	now      func() time.Time
}

// newLogger logs to w in format "json" or "text"; the lowest level comes from RUST_LOG when it
// is a plain level name (so both controllers are tuned the same way), else INFO.
func newLogger(w io.Writer, format string) *Logger {
	min := levels["INFO"]
	if l, ok := levels[strings.ToUpper(strings.TrimSpace(os.Getenv("RUST_LOG")))]; ok {
		min = l
	}
	return &Logger{out: &logOutput{w: w, json: format == "json", minLevel: min, now: time.Now}, target: rootTarget}
}

// With returns a logger for target <root>::<module>.
func (l *Logger) With(module string) *Logger {
	return &Logger{out: l.out, target: rootTarget + "::" + module}
}

// Info, Warn and Error log msg with key/value pairs. A nil *int64 value is left out, as
// tracing leaves out a None Option.
func (l *Logger) Info(msg string, kv ...interface{})  { l.log("INFO", msg, kv) }
func (l *Logger) Warn(msg string, kv ...interface{})  { l.log("WARN", msg, kv) }
func (l *Logger) Error(msg string, kv ...interface{}) { l.log("ERROR", msg, kv) }
func (l *Logger) Debug(msg string, kv ...interface{}) { l.log("DEBUG", msg, kv) }

func timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

type field struct {
	key   string
	value interface{}
}

func fieldsOf(kv []interface{}) []field {
	var out []field
	for i := 0; i+1 < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		v := jsonValue(kv[i+1])
		if v == nil {
			continue
		}
		out = append(out, field{key, v})
	}
	return out
}

// jsonValue turns a field value into what JSON can hold: numbers, booleans and strings as they
// are, anything else by its string form; nil pointers are absent.
func jsonValue(v interface{}) interface{} {
	switch x := v.(type) {
	case nil:
		return nil
	case *int64:
		if x == nil {
			return nil
		}
		return *x
	case bool, string, int, int32, int64, uint, uint16, uint32, uint64:
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Sprint(x)
		}
		return x
	case error:
		return x.Error()
	default:
		return fmt.Sprint(x)
	}
}

func (l *Logger) log(level, msg string, kv []interface{}) {
	if levels[level] < l.out.minLevel {
		return
	}
	fields := fieldsOf(kv)
	var line bytes.Buffer
	ts := timestamp(l.out.now())
	if l.out.json {
		// Hand-built to keep tracing's key order: timestamp, level, fields (message first),
		// target.
		line.WriteString(`{"timestamp":`)
		writeJSON(&line, ts)
		line.WriteString(`,"level":`)
		writeJSON(&line, level)
		line.WriteString(`,"fields":{"message":`)
		writeJSON(&line, msg)
		for _, f := range fields {
			line.WriteByte(',')
			writeJSON(&line, f.key)
			line.WriteByte(':')
			writeJSON(&line, f.value)
		}
		line.WriteString(`},"target":`)
		writeJSON(&line, l.target)
		line.WriteString("}\n")
	} else {
		fmt.Fprintf(&line, "%s %5s %s: %s", ts, level, l.target, msg)
		for _, f := range fields {
			if s, ok := f.value.(string); ok && strings.ContainsAny(s, " \"=") {
				fmt.Fprintf(&line, " %s=%q", f.key, s)
			} else {
				fmt.Fprintf(&line, " %s=%v", f.key, f.value)
			}
		}
		line.WriteByte('\n')
	}
	l.out.mu.Lock()
	defer l.out.mu.Unlock()
	_, _ = l.out.w.Write(line.Bytes())
}

func writeJSON(b *bytes.Buffer, v interface{}) {
	enc, err := json.Marshal(v)
	if err != nil {
		enc, _ = json.Marshal(fmt.Sprint(v))
	}
	b.Write(enc)
}
