package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// apiAccess is how to reach and authenticate to the Kubernetes API.
type apiAccess struct {
	// Server is the base URL (scheme, host, port, optional path prefix), no trailing slash.
	Server string
	// Token is a static bearer token; TokenFile is re-read when it changes (projected
	// service-account tokens rotate). At most one is set.
	Token     string
	TokenFile string
	// CAData is the PEM bundle that signs the server's certificate; nil: the system roots.
	CAData []byte
	// CertData and KeyData are a client certificate and key (PEM).
	CertData, KeyData []byte
	Insecure          bool
	TLSServerName     string
	// Namespace of the kubeconfig's context (informational).
	Namespace string
	// From says where the access came from, for the startup line.
	From string
}

// loadKubeconfig reads the current context of a kubeconfig. KUBECONFIG may list several
// files separated by ':'; as kubectl merges them, the first file to set current-context wins,
// and the first file to define a named cluster, user or context wins. Relative file paths in
// a file are relative to that file's directory.
//
// Supported: server, certificate-authority(-data), insecure-skip-tls-verify, tls-server-name;
// token, tokenFile, client-certificate(-data), client-key(-data). exec and auth-provider
// plugins, username/password and proxies are refused with an error (not ignored).
func loadKubeconfig(paths string) (apiAccess, error) {
	type named struct {
		body map[string]interface{}
		dir  string
	}
	clusters, users, contexts := map[string]named{}, map[string]named{}, map[string]named{}
	current := ""
	found := false
	for _, path := range filepath.SplitList(paths) {
		if path == "" {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.Contains(paths, string(filepath.ListSeparator)) {
				continue // kubectl skips missing files of a list
			}
			return apiAccess{}, fmt.Errorf("cannot read kubeconfig %s: %w", path, err)
		}
		found = true
		doc, err := parseYAML(src)
		if err != nil {
			return apiAccess{}, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		root, ok := doc.(map[string]interface{})
		if !ok {
			if doc == nil {
				continue
			}
			return apiAccess{}, fmt.Errorf("kubeconfig %s: not a mapping", path)
		}
		dir := filepath.Dir(path)
		for section, into := range map[string]map[string]named{"clusters": clusters, "users": users, "contexts": contexts} {
			items, _ := root[section].([]interface{})
			if root[section] != nil && items == nil {
				return apiAccess{}, fmt.Errorf("kubeconfig %s: %s is not a list", path, section)
			}
			inner := strings.TrimSuffix(section, "s")
			for _, it := range items {
				m, _ := it.(map[string]interface{})
				name, _ := m["name"].(string)
				body, _ := m[inner].(map[string]interface{})
				if name == "" || body == nil {
					return apiAccess{}, fmt.Errorf("kubeconfig %s: an entry of %s without name or %s", path, section, inner)
				}
				if _, seen := into[name]; !seen {
					into[name] = named{body, dir}
				}
			}
		}
		if c, _ := root["current-context"].(string); c != "" && current == "" {
			current = c
		}
	}
	if !found {
		return apiAccess{}, fmt.Errorf("no kubeconfig file found in %q", paths)
	}
	if current == "" {
		return apiAccess{}, errors.New("the kubeconfig has no current-context")
	}
	ctx, ok := contexts[current]
	if !ok {
		return apiAccess{}, fmt.Errorf("the kubeconfig's current-context %q is not defined", current)
	}
	clusterName, _ := ctx.body["cluster"].(string)
	userName, _ := ctx.body["user"].(string)
	cluster, ok := clusters[clusterName]
	if !ok {
		return apiAccess{}, fmt.Errorf("context %q: cluster %q is not defined", current, clusterName)
	}
	a := apiAccess{From: "kubeconfig context " + current}
	a.Namespace, _ = ctx.body["namespace"].(string)
	str := func(m map[string]interface{}, k string) (string, error) {
		switch v := m[k].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		default:
			return "", fmt.Errorf("kubeconfig: %s is not a string", k)
		}
	}
	var err error
	if a.Server, err = str(cluster.body, "server"); err != nil {
		return apiAccess{}, err
	}
	if a.Server == "" {
		return apiAccess{}, fmt.Errorf("cluster %q has no server", clusterName)
	}
	if a.Server, err = validateServer(a.Server); err != nil {
		return apiAccess{}, err
	}
	switch v := cluster.body["insecure-skip-tls-verify"].(type) {
	case nil:
	case bool:
		a.Insecure = v
	default:
		return apiAccess{}, errors.New("kubeconfig: insecure-skip-tls-verify is not a boolean")
	}
	if a.TLSServerName, err = str(cluster.body, "tls-server-name"); err != nil {
		return apiAccess{}, err
	}
	if proxy, _ := str(cluster.body, "proxy-url"); proxy != "" {
		return apiAccess{}, errors.New("kubeconfig: proxy-url is not supported")
	}
	if a.CAData, err = fileOrData(cluster.body, "certificate-authority", cluster.dir); err != nil {
		return apiAccess{}, err
	}
	if userName != "" {
		user, ok := users[userName]
		if !ok {
			return apiAccess{}, fmt.Errorf("context %q: user %q is not defined", current, userName)
		}
		for _, unsupported := range []string{"exec", "auth-provider", "username", "password", "as", "impersonate"} {
			if user.body[unsupported] != nil {
				return apiAccess{}, fmt.Errorf("kubeconfig user %q: %s is not supported (use a token, tokenFile or client certificate)", userName, unsupported)
			}
		}
		if a.Token, err = str(user.body, "token"); err != nil {
			return apiAccess{}, err
		}
		if a.TokenFile, err = str(user.body, "tokenFile"); err != nil {
			return apiAccess{}, err
		}
		if a.TokenFile != "" {
			// As client-go: the token file, re-read as it rotates, takes precedence over an
			// inline token.
			a.Token = ""
			if !filepath.IsAbs(a.TokenFile) {
				a.TokenFile = filepath.Join(user.dir, a.TokenFile)
			}
		}
		if a.CertData, err = fileOrData(user.body, "client-certificate", user.dir); err != nil {
			return apiAccess{}, err
		}
		if a.KeyData, err = fileOrData(user.body, "client-key", user.dir); err != nil {
			return apiAccess{}, err
		}
		if (a.CertData == nil) != (a.KeyData == nil) {
			return apiAccess{}, fmt.Errorf("kubeconfig user %q: a client certificate needs its key and the other way round", userName)
		}
	}
	return a, nil
}

// fileOrData reads <key>-data (base64) or the file named by <key>; nil when neither is set.
func fileOrData(m map[string]interface{}, key, dir string) ([]byte, error) {
	if d, ok := m[key+"-data"]; ok && d != nil {
		s, isString := d.(string)
		if !isString {
			return nil, fmt.Errorf("kubeconfig: %s-data is not a string", key)
		}
		out, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %s-data is not base64: %w", key, err)
		}
		return out, nil
	}
	p, _ := m[key].(string)
	if p == "" {
		return nil, nil
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	out, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: cannot read %s: %w", key, err)
	}
	return out, nil
}
