package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestYAMLSubset(t *testing.T) {
	src := `---
# kubectl's layout: sequences at their key's indentation
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: "https://10.0.0.1:6443"   # a comment
  name: c1
contexts:
  - name: 'it''s'
    context: {}
users: []
flag: true
none: ~
url: http://x:1/#not-a-comment
`
	got, err := parseYAML([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"apiVersion": "v1",
		"clusters": []interface{}{map[string]interface{}{
			"cluster": map[string]interface{}{"certificate-authority-data": "QUJD", "server": "https://10.0.0.1:6443"},
			"name":    "c1",
		}},
		"contexts": []interface{}{map[string]interface{}{"name": "it's", "context": map[string]interface{}{}}},
		"users":    []interface{}{},
		"flag":     true,
		"none":     nil,
		"url":      "http://x:1/#not-a-comment",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v", got)
	}
}

func TestYAMLOutsideTheSubsetIsAnError(t *testing.T) {
	for _, src := range []string{
		"a: &anchor x\n",
		"a: *alias\n",
		"a: !!str x\n",
		"a: |\n  block\n",
		"a: [x, y]\n",
		"a: 1\na: 2\n",
		"a:\n  b: 1\n   c: 2\n",
		"a: x\n---\nb: y\n",
		"a: \"unterminated\n",
		"\ta: 1\n",
		"just a scalar line\nb: 1\n",
	} {
		if v, err := parseYAML([]byte(src)); err == nil {
			t.Errorf("%q parsed as %#v", src, v)
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The shape the conformance suite writes (serde_yaml): a token user, plain HTTP.
func TestKubeconfigWithATokenAsTheConformanceSuiteWritesIt(t *testing.T) {
	dir := t.TempDir()
	kc := writeFile(t, dir, "pod.kubeconfig", `apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: http://127.0.0.1:41234
users:
- name: service-account
  user:
    token: abc.def
contexts:
- name: pod
  context:
    cluster: cluster
    user: service-account
    namespace: conformance-1
current-context: pod
`)
	a, err := loadKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Server != "http://127.0.0.1:41234" || a.Token != "abc.def" || a.Namespace != "conformance-1" || a.CAData != nil || a.Insecure {
		t.Fatalf("%+v", a)
	}
}

func TestKubeconfigFilesAreRelativeToTheKubeconfigAndMerged(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "ca.crt", "CA PEM")
	writeFile(t, dir, "client.crt", "CERT PEM")
	writeFile(t, dir, "client.key", "KEY PEM")
	writeFile(t, dir, "token", "tok\n")
	first := writeFile(t, dir, "a.yaml", `current-context: main
contexts:
- name: main
  context: {cluster: c, user: u}
`)
	if _, err := loadKubeconfig(first); err == nil {
		t.Fatal("a non-empty flow mapping is outside the subset and must fail")
	}
	first = writeFile(t, dir, "a.yaml", `current-context: main
contexts:
- name: main
  context:
    cluster: c
    user: u
`)
	second := writeFile(t, dir, "b.yaml", `clusters:
- name: c
  cluster:
    server: https://api.example:6443/
    certificate-authority: ca.crt
    tls-server-name: api.internal
users:
- name: u
  user:
    client-certificate: client.crt
    client-key: client.key
    tokenFile: token
- name: other
  user:
    exec:
      command: gke-gcloud-auth-plugin
`)
	a, err := loadKubeconfig(first + ":" + filepath.Join(dir, "missing") + ":" + second)
	if err != nil {
		t.Fatal(err)
	}
	if a.Server != "https://api.example:6443" || string(a.CAData) != "CA PEM" || string(a.CertData) != "CERT PEM" ||
		string(a.KeyData) != "KEY PEM" || a.TokenFile != filepath.Join(dir, "token") || a.TLSServerName != "api.internal" {
		t.Fatalf("%+v", a)
	}
	// An exec plugin is refused, not ignored.
	third := writeFile(t, dir, "c.yaml", "current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: other\n")
	if _, err := loadKubeconfig(third + ":" + second); err == nil || !strings.Contains(err.Error(), "exec is not supported") {
		t.Fatalf("exec user: %v", err)
	}
}

func TestKubeconfigInlineDataAndInsecureAndJSON(t *testing.T) {
	dir := t.TempDir()
	ca := base64.StdEncoding.EncodeToString([]byte("CA"))
	kc := writeFile(t, dir, "kc.json", `{"current-context":"x","contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],
"clusters":[{"name":"c","cluster":{"server":"https://h:1","certificate-authority-data":"`+ca+`","insecure-skip-tls-verify":true}}],
"users":[{"name":"u","user":{"token":"t","tokenFile":"tokenfile"}}]}`)
	a, err := loadKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	// tokenFile wins over token, as in client-go.
	if string(a.CAData) != "CA" || !a.Insecure || a.Token != "" || a.TokenFile != filepath.Join(dir, "tokenfile") {
		t.Fatalf("%+v", a)
	}
	for _, bad := range []string{
		"current-context: nope\n",
		"current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: missing\n",
		"current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\nclusters:\n- name: c\n  cluster:\n    server: ftp://x\n",
	} {
		if _, err := loadKubeconfig(writeFile(t, dir, "bad.yaml", bad)); err == nil {
			t.Errorf("%q loaded", bad)
		}
	}
}
