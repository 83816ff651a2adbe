"""Flags and environment variables: defaults, every accepted form, and every usage error
(exit status 2 with exactly one line, checked on the real entry point in a subprocess)."""

import os
import subprocess
import sys
import unittest

import support
from config import (IN_CLUSTER_CA, IN_CLUSTER_TOKEN, UsageError, parse, parse_bind_address,
                    parse_duration, validate_leader_url)

CONTROLLER = os.path.join(support.ROOT, "controller.py")
SERVER = ["--server", "http://127.0.0.1:6443"]
IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


class DurationTests(unittest.TestCase):
    def test_human_durations(self):
        for text, seconds in [("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0),
                              ("1m 30s", 90.0), ("250us", 0.00025), ("0s", 0.0), ("10sec", 10.0)]:
            with self.subTest(text=text):
                self.assertAlmostEqual(parse_duration(text), seconds)

    def test_invalid_durations(self):
        for text in ["", "1", "1.5s", "s", "-1s", "1x", "1s2", "one second"]:
            with self.subTest(text=text), self.assertRaises(ValueError):
                parse_duration(text)


class BindAddressTests(unittest.TestCase):
    def test_forms(self):
        self.assertIsNone(parse_bind_address("0"))
        self.assertEqual(parse_bind_address(":8080"), ("0.0.0.0", 8080))
        self.assertEqual(parse_bind_address("localhost:9090"), ("127.0.0.1", 9090))
        self.assertEqual(parse_bind_address("127.0.0.1:0"), ("127.0.0.1", 0))
        self.assertEqual(parse_bind_address("[::1]:9090"), ("::1", 9090))
        self.assertEqual(parse_bind_address("0.0.0.0:1"), ("0.0.0.0", 1))

    def test_invalid(self):
        for text in ["8080", ":http", ":70000", "host:80", "[::1]", "::1:80", "", ":", "1.2.3:80", "[nope]:80"]:
            with self.subTest(text=text), self.assertRaises(ValueError):
                parse_bind_address(text)


class LeaderUrlTests(unittest.TestCase):
    def test_base_urls(self):
        self.assertEqual(validate_leader_url("http://127.0.0.1:4040"), "http://127.0.0.1:4040")
        self.assertEqual(validate_leader_url("http://127.0.0.1:4040/"), "http://127.0.0.1:4040")
        self.assertEqual(validate_leader_url("http://[::1]:4040"), "http://[::1]:4040")
        self.assertEqual(validate_leader_url("http://localhost"), "http://localhost")
        for bad in ["https://127.0.0.1:4040", "http://127.0.0.1:4040/leader", "http://x:4040?a=b", "nonsense",
                    "http://:4040", "http://x:port", "http://u:p@x:4040"]:
            with self.subTest(url=bad), self.assertRaises(ValueError):
                validate_leader_url(bad)


class ParseTests(unittest.TestCase):
    def test_defaults_in_a_pod(self):
        s = parse([], IN_CLUSTER)
        self.assertEqual(s.leader_url, "http://127.0.0.1:4040")
        self.assertEqual(s.leader_poll_interval, 1.0)
        self.assertEqual(s.max_concurrent_reconciles, 1)
        self.assertEqual(s.metrics_bind_address, ("0.0.0.0", 8080))
        self.assertEqual(s.health_probe_bind_address, ("0.0.0.0", 8081))
        self.assertIsNone(s.namespace)
        self.assertEqual(s.log_format, "text")
        self.assertEqual(s.server, "https://10.96.0.1:443")
        self.assertEqual(s.token_file, IN_CLUSTER_TOKEN)
        self.assertEqual(s.ca_file, IN_CLUSTER_CA)
        self.assertEqual(s.api_timeout, 10.0)

    def test_ipv6_in_cluster_host_is_bracketed(self):
        s = parse([], {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
        self.assertEqual(s.server, "https://[fd00::1]:443")

    def test_a_given_server_does_not_get_the_pod_credentials_by_default(self):
        s = parse(SERVER, IN_CLUSTER)
        self.assertEqual(s.server, "http://127.0.0.1:6443")
        self.assertIsNone(s.token_file)
        self.assertIsNone(s.ca_file)
        s = parse(SERVER + ["--token-file", "/t", "--certificate-authority", "/ca"], {})
        self.assertEqual((s.token_file, s.ca_file), ("/t", "/ca"))

    def test_the_deployment_args(self):
        s = parse(["--leader-elect=true", "--leader-url=http://127.0.0.1:4040", "--leader-poll-interval=1s",
                   "--max-concurrent-reconciles=1", "--metrics-bind-address=:8080",
                   "--health-probe-bind-address=:8081"], dict(IN_CLUSTER, LOG_FORMAT="json"))
        self.assertEqual(s.leader_url, "http://127.0.0.1:4040")
        self.assertEqual(s.log_format, "json")

    def test_leader_elect_forms(self):
        self.assertIsNotNone(parse(SERVER + ["--leader-elect"], {}).leader_url)
        self.assertIsNotNone(parse(SERVER + ["--leader-elect=true"], {}).leader_url)
        self.assertIsNone(parse(SERVER + ["--leader-elect=false"], {}).leader_url)
        self.assertIsNone(parse(SERVER + ["--leader-elect", "false"], {}).leader_url)
        self.assertIsNone(parse(SERVER, {"LEADER_ELECT": "false"}).leader_url)
        self.assertIsNotNone(parse(SERVER + ["--leader-elect"], {"LEADER_ELECT": "false"}).leader_url,
                             "a flag wins over its environment variable")
        # A bad URL does not matter when leader election is off.
        self.assertIsNone(parse(SERVER + ["--leader-elect=false", "--leader-url", "nonsense"], {}).leader_url)

    def test_every_flag_reads_its_environment_variable(self):
        env = {
            "WATCH_NAMESPACE": "team-a", "LEADER_URL": "http://127.0.0.1:5050", "LEADER_POLL_INTERVAL": "250ms",
            "MAX_CONCURRENT_RECONCILES": "4", "METRICS_BIND_ADDRESS": "127.0.0.1:9000",
            "HEALTH_PROBE_BIND_ADDRESS": "0", "LOG_FORMAT": "json", "KUBE_API_SERVER": "https://api:6443/",
            "KUBE_TOKEN_FILE": "/tok", "KUBE_CA_FILE": "/ca.crt", "API_TIMEOUT": "3s",
        }
        s = parse([], env)
        self.assertEqual(s.namespace, "team-a")
        self.assertEqual(s.leader_url, "http://127.0.0.1:5050")
        self.assertEqual(s.leader_poll_interval, 0.25)
        self.assertEqual(s.max_concurrent_reconciles, 4)
        self.assertEqual(s.metrics_bind_address, ("127.0.0.1", 9000))
        self.assertIsNone(s.health_probe_bind_address)
        self.assertEqual(s.log_format, "json")
        self.assertEqual(s.server, "https://api:6443")
        self.assertEqual((s.token_file, s.ca_file, s.api_timeout), ("/tok", "/ca.crt", 3.0))

    def test_empty_environment_variables_count_as_unset(self):
        s = parse(SERVER, {"WATCH_NAMESPACE": "", "LEADER_POLL_INTERVAL": ""})
        self.assertIsNone(s.namespace)
        self.assertEqual(s.leader_poll_interval, 1.0)

    def test_port_zero_may_be_given_twice(self):
        s = parse(SERVER + ["--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0"], {})
        self.assertEqual(s.metrics_bind_address, ("127.0.0.1", 0))

    def test_usage_errors_name_the_problem(self):
        for args, env, needle in [
            (["--leader-poll-interval", "0s"], {}, "positive"),
            (["--leader-url", "https://127.0.0.1:4040"], {}, "http://host:port"),
            (["--leader-url", "http://127.0.0.1:4040/leader"], {}, "without a path"),
            (["--metrics-bind-address", ":9000", "--health-probe-bind-address", "0.0.0.0:9000"], {}, "both"),
            (["--max-concurrent-reconciles", "0"], {}, "--max-concurrent-reconciles"),
            ([], {"LEADER_POLL_INTERVAL": "soon"}, "LEADER_POLL_INTERVAL"),
        ]:
            with self.subTest(args=args, env=env):
                with self.assertRaises(UsageError) as cm:
                    parse(SERVER + args, env)
                self.assertIn(needle, str(cm.exception))


class ExitStatusTests(unittest.TestCase):
    """Every usage error, through the real entry point: status 2, exactly one line."""

    def run_controller(self, args, env=None):
        base = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "PYTHONPATH")}
        base["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the source tree
        base.update(env or {})
        return subprocess.run([sys.executable, CONTROLLER] + args, env=base, capture_output=True,
                              text=True, timeout=60)

    def test_usage_errors_exit_2_with_one_line(self):
        cases = [
            ([], {}),  # no API server at all
            (["--bogus"], {}),
            (["--leader-poll-interval", "0s"], {}),
            (["--leader-poll-interval", "abc"], {}),
            (["--leader-poll-interval"], {}),
            (["--leader-url", "https://127.0.0.1:4040"], {}),
            (["--leader-url", "http://127.0.0.1:4040/leader"], {}),
            (["--leader-elect=maybe"], {}),
            (["--max-concurrent-reconciles", "0"], {}),
            (["--max-concurrent-reconciles", "x"], {}),
            (["--metrics-bind-address", "nonsense"], {}),
            (["--metrics-bind-address", ":9000", "--health-probe-bind-address", ":9000"], {}),
            (["--log-format", "xml"], {}),
            (["--api-timeout", "0s"], {}),
            (["--server", "ftp://example"], {}),
            (["--namesp", "x"], {}),  # no abbreviations
            ([], {"LEADER_POLL_INTERVAL": "0s"}),
            ([], {"MAX_CONCURRENT_RECONCILES": "many"}),
            ([], {"LEADER_ELECT": "yes"}),
            ([], {"LOG_FORMAT": "xml"}),
            ([], {"HEALTH_PROBE_BIND_ADDRESS": "8081"}),
        ]
        for i, (args, env) in enumerate(cases):
            # All but the first case give an API server, so that the flag under test is what
            # fails (the first case is the missing server itself).
            full = args if i == 0 or "--server" in args else SERVER + args
            with self.subTest(args=full, env=env):
                r = self.run_controller(full, env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stdout, "")
                lines = r.stderr.splitlines()
                self.assertEqual(len(lines), 1, r.stderr)
                self.assertTrue(lines[0].startswith("newresource-controller (python): error: "), lines[0])

    def test_version_and_help(self):
        r = self.run_controller(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("newresource-controller (python)", r.stdout)
        r = self.run_controller(["--help"])
        self.assertEqual(r.returncode, 0)
        for env in ["WATCH_NAMESPACE", "LEADER_ELECT", "LEADER_URL", "LEADER_POLL_INTERVAL",
                    "MAX_CONCURRENT_RECONCILES", "METRICS_BIND_ADDRESS", "HEALTH_PROBE_BIND_ADDRESS",
                    "LOG_FORMAT", "KUBE_API_SERVER", "KUBE_TOKEN_FILE", "KUBE_CA_FILE", "API_TIMEOUT"]:
            self.assertIn(f"[env: {env}]", " ".join(r.stdout.split()), env)

    def test_an_unreadable_token_file_fails_startup(self):
        r = self.run_controller(SERVER + ["--token-file", "/nonexistent/token", "--metrics-bind-address", "0",
                                          "--health-probe-bind-address", "0", "--log-format", "json"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read the token file", r.stderr)


if __name__ == "__main__":
    unittest.main()
