package leaderclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxAnswer bounds answers and stream events (ours are a few hundred bytes).
const maxAnswer = 64 * 1024

// poolIdle drops pooled connections well before the sidecar closes idle ones (10 s), so that
// a request never races the server closing its connection.
const poolIdle = 4 * time.Second

// Client talks to one sidecar's leader API, e.g. http://127.0.0.1:4040.
type Client struct {
	base string
	http *http.Client
}

// NewClient checks that baseURL is a plain http://host:port base URL (a path is refused rather
// than ignored: http://x:4040/leader would make every request fail).
func NewClient(baseURL string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid --leader-url %q: %v", baseURL, err)
	}
	if u.Scheme != "http" || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("invalid --leader-url %q: expected http://host:port", baseURL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid --leader-url %q: give the base URL without a path", baseURL)
	}
	transport := &http.Transport{
		// The sidecar is local: never through a proxy from the environment.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		IdleConnTimeout:     poolIdle,
		MaxIdleConnsPerHost: 2,
		DisableCompression:  true,
	}
	return &Client{base: "http://" + u.Host, http: &http.Client{Transport: transport}}, nil
}

// BaseURL returns http://host:port.
func (c *Client) BaseURL() string { return c.base }

// StatusError is a non-200 answer.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("the sidecar answered %d", e.Code) }

func (c *Client) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "leader-client-go")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the sidecar: %w", err)
	}
	return resp, nil
}

func (c *Client) json(ctx context.Context, method, path string, out interface{}) error {
	resp, err := c.do(ctx, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("cannot read the sidecar's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode}
	}
	if len(body) > maxAnswer {
		return fmt.Errorf("the sidecar's answer is over %d bytes", maxAnswer)
	}
	return json.Unmarshal(body, out)
}

// Get sends GET /leader. Take the grant's send instant before calling (see [GateState]).
func (c *Client) Get(ctx context.Context) (LeaderStatus, error) {
	var raw rawStatus
	if err := c.json(ctx, http.MethodGet, PathLeader, &raw); err != nil {
		return LeaderStatus{}, err
	}
	return raw.status()
}

// Yield sends POST /leader/yield: "my workers have stopped, every grant I hold has ended".
func (c *Client) Yield(ctx context.Context) (YieldResponse, error) {
	var raw struct {
		WasLeader *bool   `json:"was_leader"`
		BackoffMs *uint64 `json:"backoff_ms"`
	}
	if err := c.json(ctx, http.MethodPost, PathYield, &raw); err != nil {
		return YieldResponse{}, err
	}
	if raw.WasLeader == nil || raw.BackoffMs == nil {
		return YieldResponse{}, errors.New("unexpected answer from the sidecar: was_leader or backoff_ms missing")
	}
	return YieldResponse{WasLeader: *raw.WasLeader, BackoffMs: *raw.BackoffMs}, nil
}

// rawStatus requires the fields a decision depends on: an answer without them is not a grant.
type rawStatus struct {
	IsLeader   *bool   `json:"is_leader"`
	Identity   string  `json:"identity"`
	Holder     *string `json:"holder"`
	Lease      string  `json:"lease"`
	Term       *int64  `json:"term"`
	ValidForMs *uint64 `json:"valid_for_ms"`
	ObservedAt *string `json:"observed_at"`
	RenewedAt  *string `json:"renewed_at"`
}

func (r rawStatus) status() (LeaderStatus, error) {
	if r.IsLeader == nil || r.ValidForMs == nil {
		return LeaderStatus{}, errors.New("unexpected answer from the sidecar: is_leader or valid_for_ms missing")
	}
	return LeaderStatus{
		IsLeader: *r.IsLeader, Identity: r.Identity, Holder: r.Holder, Lease: r.Lease,
		Term: r.Term, ValidForMs: *r.ValidForMs, ObservedAt: r.ObservedAt, RenewedAt: r.RenewedAt,
	}, nil
}

// ParseStatus decodes one /leader body or event data.
func ParseStatus(data []byte) (LeaderStatus, error) {
	var raw rawStatus
	if err := json.Unmarshal(data, &raw); err != nil {
		return LeaderStatus{}, fmt.Errorf("unexpected answer from the sidecar: %w", err)
	}
	return raw.status()
}

// Watch opens GET /leader/watch. The stream ends when ctx ends or the sidecar closes it;
// close it with [EventStream.Close].
func (c *Client) Watch(ctx context.Context) (*EventStream, error) {
	resp, err := c.do(ctx, http.MethodGet, PathWatch)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode}
	}
	return &EventStream{body: resp.Body, sse: NewSSEReader(resp.Body)}, nil
}

// EventStream is an open /leader/watch.
type EventStream struct {
	body io.Closer
	sse  *SSEReader
}

// Next returns the next leader event; other event types are skipped. Any error (including
// io.EOF when the sidecar closed the stream) ends the stream.
func (s *EventStream) Next() (LeaderStatus, error) {
	for {
		ev, err := s.sse.Next()
		if err != nil {
			return LeaderStatus{}, err
		}
		if ev.Type != EventLeader {
			continue // reserved for future use
		}
		return ParseStatus([]byte(ev.Data))
	}
}

// Close closes the connection.
func (s *EventStream) Close() error { return s.body.Close() }

// SSEEvent is one server-sent event.
type SSEEvent struct {
	// Type is the event field; "message" when absent.
	Type string
	Data string
}

// SSEReader parses a text/event-stream (the WHATWG rules: fields up to a colon and one
// optional space, data lines joined by newlines, a blank line dispatches, comments ignored).
type SSEReader struct {
	lines *bufio.Scanner
}

// NewSSEReader reads events from r; a line over 64 KiB is an error.
func NewSSEReader(r io.Reader) *SSEReader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), maxAnswer)
	return &SSEReader{lines: s}
}

// Next returns the next event with data; io.EOF when the stream ended.
func (r *SSEReader) Next() (SSEEvent, error) {
	var typ string
	var data bytes.Buffer
	hasData := false
	for r.lines.Scan() {
		line := r.lines.Text()
		if line == "" {
			if hasData {
				if typ == "" {
					typ = "message"
				}
				return SSEEvent{Type: typ, Data: data.String()}, nil
			}
			typ = ""
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value := line, ""
		if i := strings.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], strings.TrimPrefix(line[i+1:], " ")
		}
		switch field {
		case "event":
			typ = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
			if data.Len() > maxAnswer {
				return SSEEvent{}, fmt.Errorf("an event of the sidecar is over %d bytes", maxAnswer)
			}
		}
	}
	if err := r.lines.Err(); err != nil {
		return SSEEvent{}, err
	}
	return SSEEvent{}, io.EOF
}
