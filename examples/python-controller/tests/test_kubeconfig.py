"""kubeconfig reading: the YAML subset (as kubectl and serde_yaml write it), JSON, the fields
the controller honours, the precedence of KUBECONFIG / KUBE_API_SERVER / in-cluster, and a
clear refusal (exit 2, one line) of anything else."""

import base64
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
import unittest

import support
import kube
from config import UsageError, parse
from kubeconfig import KubeconfigError, load, parse_yaml

CONTROLLER = os.path.join(support.ROOT, "controller.py")
B64 = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()

#: As `kubectl config view --raw` writes it (kind's kubeconfig, plus a second user).
KUBECTL = textwrap.dedent(f"""\
    apiVersion: v1
    clusters:
    - cluster:
        certificate-authority-data: {B64}
        server: https://127.0.0.1:42853
      name: kind-kind
    contexts:
    - context:
        cluster: kind-kind
        namespace: team-a
        user: kind-kind
      name: kind-kind
    - context:
        cluster: kind-kind
        user: other
      name: other
    current-context: kind-kind
    kind: Config
    preferences: {{}}
    users:
    - name: kind-kind
      user:
        client-certificate-data: {base64.b64encode(b"CERT").decode()}
        client-key-data: {base64.b64encode(b"KEY").decode()}
    - name: other
      user:
        token: abc.def
    """)

#: As serde_yaml writes the tests' kubeconfigs (inmem-apiserver --kubeconfig-out).
SERDE = textwrap.dedent("""\
    apiVersion: v1
    clusters:
    - cluster:
        server: http://127.0.0.1:40123
      name: inmem
    contexts:
    - context:
        cluster: inmem
        namespace: default
        user: inmem
      name: inmem
    current-context: inmem
    kind: Config
    users:
    - name: inmem
      user:
        token: 'adm-token'
    """)


class YamlSubsetTests(unittest.TestCase):
    def test_block_collections_and_scalars(self):
        doc = parse_yaml(textwrap.dedent("""\
            ---
            # a comment
            a: plain text  # trailing comment
            b: "double \\"quoted\\" \\u00e9"
            c: 'single ''quoted'''
            d: 42
            e: true
            f: null
            g: ~
            h: {}
            i: []
            j:
              - x
              - k: 1
                l: [1, "two"]
              -
                - nested
            k:
            - same-indent item
            "quoted key": v
            url: https://h:6443/p#frag
            """))
        self.assertEqual(doc, {
            "a": "plain text", "b": 'double "quoted" é', "c": "single 'quoted'", "d": 42, "e": True,
            "f": None, "g": None, "h": {}, "i": [], "j": ["x", {"k": 1, "l": [1, "two"]}, ["nested"]],
            "k": ["same-indent item"], "quoted key": "v", "url": "https://h:6443/p#frag",
        })

    def test_json_is_read_as_json(self):
        self.assertEqual(parse_yaml('{"a": [1, {"b": null}]}'), {"a": [1, {"b": None}]})

    def test_what_it_does_not_understand_is_refused_with_the_line(self):
        for text, why in [
            ("a: &x 1\nb: *x\n", "anchors"),
            ("a: !!str 1\n", "tags"),
            ("a: |\n  text\n", "block scalars"),
            ("a: >\n  text\n", "block scalars"),
            ("a: one\n  two\n", "multi-line plain scalars"),
            ("a: 1\na: 2\n", "duplicate key"),
            ("a:\n\tb: 1\n", "tabs"),
            ("a: 1\n---\nb: 2\n", "one YAML document"),
            ("a: {b: c}\n", "flow collections"),
            ('a: "open\n', "unterminated"),
            ("a:\n  b: 1\n c: 2\n", "indentation"),
            ("- a\nb: 1\n", "indentation"),
            ("a: b: c\n", "mapping cannot start"),
        ]:
            with self.subTest(text=text), self.assertRaisesRegex(ValueError, f"line [0-9]+: .*{why}"):
                parse_yaml(text)


class KubeconfigTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, text, name="config"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_kubectl_style_with_client_certificate_and_ca_data(self):
        a = load(self.write(KUBECTL))
        self.assertEqual(a.server, "https://127.0.0.1:42853")
        self.assertTrue(a.ca_data.startswith("-----BEGIN CERTIFICATE-----"))
        self.assertEqual((a.client_cert_data, a.client_key_data), (b"CERT", b"KEY"))
        self.assertIsNone(a.token)
        self.assertFalse(a.insecure_skip_tls_verify)

    def test_the_current_context_picks_cluster_and_user(self):
        a = load(self.write(KUBECTL.replace("current-context: kind-kind", "current-context: other")))
        self.assertEqual(a.token, "abc.def")
        self.assertIsNone(a.client_cert_data)

    def test_serde_yaml_and_json(self):
        a = load(self.write(SERDE))
        self.assertEqual((a.server, a.token), ("http://127.0.0.1:40123", "adm-token"))
        j = load(self.write('{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],'
                            '"clusters":[{"name":"k","cluster":{"server":"http://h:1"}}]}', "json"))
        self.assertEqual((j.server, j.token, j.token_file), ("http://h:1", None, None))

    def test_files_relative_paths_token_file_and_insecure(self):
        text = textwrap.dedent("""\
            current-context: c
            contexts: [{"name": "c", "context": {"cluster": "k", "user": "u"}}]
            clusters:
            - name: k
              cluster:
                server: https://h:6443
                insecure-skip-tls-verify: true
            users:
            - name: u
              user:
                tokenFile: secrets/token
                client-certificate: /abs/c.crt
                client-key: k.key
            """)
        a = load(self.write(text))
        self.assertTrue(a.insecure_skip_tls_verify)
        self.assertEqual(a.token_file, os.path.join(self.dir, "secrets/token"))
        self.assertEqual((a.client_cert_file, a.client_key_file), ("/abs/c.crt", os.path.join(self.dir, "k.key")))
        ca = load(self.write(text.replace("insecure-skip-tls-verify: true", "certificate-authority: ca.crt"), "b"))
        self.assertEqual(ca.ca_file, os.path.join(self.dir, "ca.crt"))

    def test_several_files_merge_first_wins(self):
        first = self.write("current-context: other\nusers:\n- name: other\n  user:\n    token: first\n", "a")
        second = self.write(KUBECTL, "b")
        a = load(first + os.pathsep + second)
        self.assertEqual((a.server, a.token), ("https://127.0.0.1:42853", "first"))

    def test_errors_name_the_problem(self):
        for text, why in [
            ("kind: Config\n", "no current-context"),
            ("current-context: x\n", "'x' is not defined"),
            (SERDE.replace("token: 'adm-token'", "exec: {}"), "exec is not supported"),
            (SERDE.replace("token: 'adm-token'", "username: u"), "username is not supported"),
            (SERDE.replace("token: 'adm-token'", "tokn: x"), "unknown field 'tokn'"),
            (SERDE.replace("    server:", "    proxy-url: http://p\n    server:"), "proxy-url is not supported"),
            (SERDE.replace("token: 'adm-token'", "client-certificate-data: '!!'"), "not base64"),
            (SERDE.replace("token: 'adm-token'", f"client-certificate-data: {B64}"), "needs its key"),
            (KUBECTL.replace("server: https", "insecure-skip-tls-verify: true\n    server: https"),
             "insecure-skip-tls-verify"),
            (SERDE.replace("token: 'adm-token'", "token: 12345"), "token is not a string"),
            ("a: |\n  x\n", "line 1: block scalars"),
        ]:
            with self.subTest(why=why), self.assertRaisesRegex(KubeconfigError, why):
                load(self.write(text))
        with self.assertRaisesRegex(KubeconfigError, "cannot read kubeconfig"):
            load(os.path.join(self.dir, "missing"))


class PrecedenceTests(unittest.TestCase):
    """KUBECONFIG / --kubeconfig as the Rust controller reads them; --server as an alternative."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.kc = os.path.join(self.dir, "kc")
        with open(self.kc, "w") as f:
            f.write(SERDE)

    def test_kubeconfig_wins_over_the_server_variables_as_for_the_rust_controller(self):
        s = parse([], {"KUBECONFIG": self.kc, "KUBE_API_SERVER": "http://other:1", "KUBE_TOKEN_FILE": "/t",
                       "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
        self.assertEqual((s.server, s.api.token, s.token_file), ("http://127.0.0.1:40123", "adm-token", None))
        self.assertEqual(s.api_source, f"kubeconfig {self.kc}")

    def test_flags_win_over_the_environment(self):
        s = parse(["--server", "http://flag:1"], {"KUBECONFIG": self.kc})
        self.assertEqual((s.server, s.api_source), ("http://flag:1", "--server"))
        s = parse(["--kubeconfig", self.kc], {"KUBE_API_SERVER": "http://env:1"})
        self.assertEqual(s.server, "http://127.0.0.1:40123")
        with self.assertRaisesRegex(UsageError, "not both"):
            parse(["--kubeconfig", self.kc, "--server", "http://x:1"], {})
        with self.assertRaisesRegex(UsageError, "--token-file goes with --server"):
            parse(["--kubeconfig", self.kc, "--token-file", "/t"], {})

    def test_home_kube_config_comes_before_in_cluster(self):
        os.makedirs(os.path.join(self.dir, ".kube"))
        shutil.copy(self.kc, os.path.join(self.dir, ".kube", "config"))
        s = parse([], {"HOME": self.dir, "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
        self.assertEqual(s.server, "http://127.0.0.1:40123")
        s = parse([], {"HOME": "/nonexistent", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
        self.assertEqual((s.server, s.api_source), ("https://10.0.0.1:443", "in-cluster"))

    def test_a_broken_kubeconfig_exits_2_with_one_line(self):
        bad = os.path.join(self.dir, "bad")
        with open(bad, "w") as f:
            f.write("users: &u []\n")
        env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": bad, "PYTHONDONTWRITEBYTECODE": "1"}
        r = subprocess.run([sys.executable, CONTROLLER], env=env, capture_output=True, text=True, timeout=support.LIMIT)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertRegex(r.stderr, r"^newresource-controller \(python\): error: cannot read kubeconfig .*bad: "
                                   r"line 1: anchors are not supported\n$")


class TlsTests(unittest.TestCase):
    def test_insecure_and_ca_data_contexts(self):
        from kubeconfig import ApiAccess
        ctx = kube.tls_context(ApiAccess(server="https://h", insecure_skip_tls_verify=True))
        self.assertEqual(ctx.verify_mode, ssl.CERT_NONE)
        self.assertFalse(ctx.check_hostname)
        with self.assertRaisesRegex(kube.ConfigError, "CA bundle"):
            kube.tls_context(ApiAccess(server="https://h", ca_data="not a certificate"))

    @unittest.skipUnless(shutil.which("openssl"), "needs the openssl command to make a certificate")
    def test_client_certificate_data_is_loaded_through_private_files(self):
        from kubeconfig import ApiAccess
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=u",
                        "-days", "1", "-keyout", f"{d}/k.pem", "-out", f"{d}/c.pem"],
                       check=True, capture_output=True)
        with open(f"{d}/c.pem", "rb") as c, open(f"{d}/k.pem", "rb") as k:
            cert, key = c.read(), k.read()
        before = set(os.listdir(tempfile.gettempdir()))
        ctx = kube.tls_context(ApiAccess(server="https://h", ca_data=cert.decode(), client_cert_data=cert,
                                         client_key_data=key))
        self.assertEqual(ctx.verify_mode, ssl.CERT_REQUIRED)
        self.assertEqual(set(os.listdir(tempfile.gettempdir())) - before, set(), "the temporary files are gone")
        with self.assertRaisesRegex(kube.ConfigError, "client certificate"):
            kube.tls_context(ApiAccess(server="https://h", client_cert_data=cert, client_key_data=cert))


if __name__ == "__main__":
    unittest.main()
