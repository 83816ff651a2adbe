package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestJSONLinesHaveTracingsShape(t *testing.T) {
	var out bytes.Buffer
	l := newLogger(&out, "json")
	l.out.now = func() time.Time { return time.Date(2026, 11, 24, 14, 54, 18, 807083000, time.UTC) }
	var none *int64
	four := int64(4)
	l.With("workers").Info("active window started", "term", &four, "missing", none, "ok", true)
	want := `{"timestamp":"2026-11-24T14:54:18.807083Z","level":"INFO","fields":{"message":"active window started","term":4,"ok":true},"target":"newresource_controller_go::workers"}` + "\n"
	if out.String() != want {
		t.Fatalf("got  %s\nwant %s", out.String(), want)
	}
	var parsed map[string]interface{}
	if err := json.Unmarshal(out.Bytes(), &parsed); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	l.Warn("x", "error", "a \"quoted\"\nline")
	if strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("one line per record: %q", out.String())
	}
}

func TestTextLines(t *testing.T) {
	var out bytes.Buffer
	l := newLogger(&out, "text")
	l.out.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	l.Info("status ready", "object", "ns/a", "term", int64(2))
	if got := out.String(); got != "2026-01-02T03:04:05.000000Z  INFO newresource_controller_go: status ready object=ns/a term=2\n" {
		t.Fatalf("%q", got)
	}
}
