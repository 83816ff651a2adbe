package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A minimal Kubernetes client on net/http: list, watch and the PUT of /status for
// NewResources, with a bearer token re-read when its file changes (projected service-account
// tokens rotate) or after a 401.

const (
	group    = "apps.newresource.com"
	apiVer   = "v1alpha1"
	resource = "newresources"
	// maxBody bounds list pages and single objects.
	maxBody = 64 << 20
)

// apiError is an answer of the API server other than 2xx.
type apiError struct {
	Code    int
	Reason  string
	Message string
}

func (e *apiError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%d %s: %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("%d: %s", e.Code, e.Message)
}

// errorCode is the code label of controller_api_errors_total: the HTTP status, "timeout" or
// "transport".
func errorCode(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return fmt.Sprint(ae.Code)
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return "transport"
}

func apiErrorFrom(code int, body []byte) *apiError {
	var status struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(body, &status) != nil || status.Message == "" {
		status.Message = strings.TrimSpace(string(body))
		if len(status.Message) > 200 {
			status.Message = status.Message[:200]
		}
	}
	return &apiError{Code: code, Reason: status.Reason, Message: status.Message}
}

// tokenSource reads a token file, again when its modification time or size changes, and
// after a 401.
type tokenSource struct {
	static string
	path   string
	mu     sync.Mutex
	token  string
	stamp  string
}

func (t *tokenSource) get() (string, error) {
	if t.path == "" {
		return t.static, nil
	}
	info, err := os.Stat(t.path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	stamp := fmt.Sprint(info.ModTime().UnixNano(), info.Size())
	t.mu.Lock()
	defer t.mu.Unlock()
	if stamp != t.stamp {
		b, err := os.ReadFile(t.path)
		if err != nil {
			return "", fmt.Errorf("cannot read the token file: %w", err)
		}
		t.token, t.stamp = strings.TrimSpace(string(b)), stamp
	}
	return t.token, nil
}

func (t *tokenSource) invalidate() {
	t.mu.Lock()
	t.stamp = ""
	t.mu.Unlock()
}

// kubeClient talks to one API server.
type kubeClient struct {
	server  string
	token   *tokenSource
	http    *http.Client
	timeout time.Duration
}

func newKubeClient(a apiAccess, timeout time.Duration) (*kubeClient, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: a.TLSServerName, InsecureSkipVerify: a.Insecure} //nolint:gosec // only when the kubeconfig asks
	if a.CAData != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(a.CAData) {
			return nil, errors.New("the CA bundle holds no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	if a.CertData != nil {
		cert, err := tls.X509KeyPair(a.CertData, a.KeyData)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &kubeClient{
		server:  a.Server,
		token:   &tokenSource{static: a.Token, path: a.TokenFile},
		http:    &http.Client{Transport: transport},
		timeout: timeout,
	}, nil
}

func collectionPath(namespace string) string {
	if namespace == "" {
		return fmt.Sprintf("/apis/%s/%s/%s", group, apiVer, resource)
	}
	return fmt.Sprintf("/apis/%s/%s/namespaces/%s/%s", group, apiVer, url.PathEscape(namespace), resource)
}

func statusPath(namespace, name string) string {
	return collectionPath(namespace) + "/" + url.PathEscape(name) + "/status"
}

// do sends one request; a 401 re-reads the token and retries once. The caller closes the body
// of a 2xx answer; other answers come back as *apiError.
func (k *kubeClient) do(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		u := k.server + path
		if len(query) > 0 {
			u += "?" + query.Encode()
		}
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, r)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "newresource-controller-go/"+version)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		token, err := k.token.get()
		if err != nil {
			return nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := k.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, nil
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && k.token.path != "" {
			k.token.invalidate()
			continue
		}
		return nil, apiErrorFrom(resp.StatusCode, b)
	}
}

// requestJSON sends a request bounded by the API timeout and decodes the answer into out.
func (k *kubeClient) requestJSON(ctx context.Context, method, path string, query url.Values, body []byte, out interface{}) error {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	resp, err := k.do(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return err
	}
	if len(data) > maxBody {
		return errors.New("the answer is too large")
	}
	return decodeJSON(data, out)
}

// decodeJSON keeps numbers as json.Number, so that an object sent back in a status write
// carries every number exactly as it came.
func decodeJSON(data []byte, out interface{}) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("cannot decode the answer: %w", err)
	}
	return nil
}

// object is a NewResource as the API server sent it: kept whole, so that a status write
// sends back every field it got (metadata.resourceVersion and uid are the preconditions).
type object map[string]interface{}

func (o object) meta() map[string]interface{} {
	m, _ := o["metadata"].(map[string]interface{})
	return m
}

func (o object) str(field string) string {
	s, _ := o.meta()[field].(string)
	return s
}

func (o object) name() string            { return o.str("name") }
func (o object) namespace() string       { return o.str("namespace") }
func (o object) uid() string             { return o.str("uid") }
func (o object) resourceVersion() string { return o.str("resourceVersion") }

// key is namespace/name ("" when either is missing).
func (o object) key() string {
	if o.name() == "" || o.namespace() == "" {
		return ""
	}
	return o.namespace() + "/" + o.name()
}

// generation is metadata.generation; ok is false when it is absent.
func (o object) generation() (int64, bool) {
	switch g := o.meta()["generation"].(type) {
	case json.Number:
		n, err := g.Int64()
		return n, err == nil
	}
	return 0, false
}

type objectList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
		Continue        string `json:"continue"`
	} `json:"metadata"`
	Items []object `json:"items"`
}

// list lists one page of NewResources.
func (k *kubeClient) list(ctx context.Context, namespace string, query url.Values) (objectList, error) {
	var out objectList
	err := k.requestJSON(ctx, http.MethodGet, collectionPath(namespace), query, nil, &out)
	return out, err
}

// replaceStatus PUTs obj to its /status subresource; the answer is the object as written.
// The body carries metadata.resourceVersion and uid: the write is a compare-and-swap, so a
// write based on an old read (ours or a deposed leader's) fails with 409 instead of
// overwriting a newer state.
func (k *kubeClient) replaceStatus(ctx context.Context, obj object) (object, error) {
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var out object
	err = k.requestJSON(ctx, http.MethodPut, statusPath(obj.namespace(), obj.name()), nil, body, &out)
	return out, err
}

// watchEvent is one line of a watch.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watch opens a watch from resourceVersion rv with bookmarks; each event goes to handle until
// the server ends the watch, ctx ends, or handle fails. No event for readTimeout fails it.
func (k *kubeClient) watch(ctx context.Context, namespace, rv string, timeoutSeconds int, handle func(watchEvent) error) error {
	query := url.Values{
		"watch":               {"1"},
		"resourceVersion":     {rv},
		"allowWatchBookmarks": {"true"},
		"timeoutSeconds":      {fmt.Sprint(timeoutSeconds)},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := k.do(ctx, http.MethodGet, collectionPath(namespace), query, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// A watch that goes silent past its own timeout (plus a margin) is dead: cancel it.
	readTimeout := time.Duration(timeoutSeconds)*time.Second + 30*time.Second
	var silent atomic.Bool
	silence := time.AfterFunc(readTimeout, func() {
		silent.Store(true)
		cancel()
	})
	defer silence.Stop()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 0, 64<<10), maxBody)
	for lines.Scan() {
		silence.Reset(readTimeout)
		line := bytes.TrimSpace(lines.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev watchEvent
		if err := json.Unmarshal(line, &ev); err != nil || ev.Type == "" {
			return fmt.Errorf("a malformed watch event: %q", truncate(string(line), 200))
		}
		if err := handle(ev); err != nil {
			return err
		}
	}
	if silent.Load() {
		return fmt.Errorf("the watch sent nothing for %s", readTimeout)
	}
	return lines.Err()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
