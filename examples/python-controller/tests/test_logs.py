"""Log lines: exactly tracing-subscriber's JSON and text shapes."""

import datetime
import io
import json
import re
import unittest

import support
import logs

TS = "2026-11-24T14:54:18.807083Z"


class FormatTests(unittest.TestCase):
    def test_json_shape_is_exact(self):
        line = logs.format_json(TS, "INFO", "newresource_controller_py::workers", "active window started",
                                {"term": 4})
        self.assertEqual(
            line,
            '{"timestamp":"2026-11-24T14:54:18.807083Z","level":"INFO","fields":{"message":"active window '
            'started","term":4},"target":"newresource_controller_py::workers"}',
        )

    def test_none_fields_are_left_out_and_order_is_kept(self):
        line = logs.format_json(TS, "WARN", "t", "reconcile failed",
                                {"object": "ns/a", "term": None, "error_type": "conflict", "retry_in_ms": 200,
                                 "ok": False})
        obj = json.loads(line)
        self.assertEqual(list(obj), ["timestamp", "level", "fields", "target"])
        self.assertEqual(list(obj["fields"]), ["message", "object", "error_type", "retry_in_ms", "ok"])
        self.assertNotIn("term", obj["fields"])
        self.assertIs(obj["fields"]["ok"], False)

    def test_values_that_are_not_json_become_strings(self):
        line = logs.format_json(TS, "ERROR", "t", "m", {"error": ValueError("boom"), "x": float("nan")})
        obj = json.loads(line)
        self.assertEqual(obj["fields"], {"message": "m", "error": "boom", "x": "nan"})

    def test_text_shape(self):
        line = logs.format_text(TS, "INFO", "newresource_controller_py::workers", "active window started",
                                {"term": 4, "reason": "new term", "gone": None, "up": True})
        self.assertEqual(line, '2026-11-24T14:54:18.807083Z  INFO newresource_controller_py::workers: '
                               'active window started term=4 reason="new term" up=true')
        warn = logs.format_text(TS, "WARN", "t", "m", {})
        self.assertEqual(warn, "2026-11-24T14:54:18.807083Z  WARN t: m")
        err = logs.format_text(TS, "ERROR", "t", "line\nbreak", {"e": "a\nb"})
        self.assertEqual(err, '2026-11-24T14:54:18.807083Z ERROR t: line\\nbreak e="a\\nb"')
        self.assertNotIn("\n", err)

    def test_timestamp_is_utc_with_microseconds(self):
        ts = logs.timestamp(datetime.datetime(2026, 11, 24, 15, 54, 18, 807083,
                                              tzinfo=datetime.timezone(datetime.timedelta(hours=1))))
        self.assertEqual(ts, TS)
        self.assertRegex(logs.timestamp(), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class LoggerTests(unittest.TestCase):
    def tearDown(self):
        support.quiet_logs()

    def test_one_flushed_line_per_event(self):
        class Stream(io.StringIO):
            flushes = 0

            def flush(self):
                Stream.flushes += 1

        s = Stream()
        logs.configure("json", stream=s, level="info")
        log = logs.get("workers")
        log.info("active window started", term=None)
        log.debug("hidden")
        log.warn("reconcile failed", object="ns/a")
        lines = s.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(Stream.flushes, 2)
        first = json.loads(lines[0])
        self.assertEqual(first["fields"], {"message": "active window started"})
        self.assertEqual(first["target"], "newresource_controller_py::workers")
        self.assertEqual(json.loads(lines[1])["level"], "WARN")

    def test_text_lines(self):
        s = io.StringIO()
        logs.configure("text", stream=s, level="info")
        logs.get().info("newresource-controller stopped")
        self.assertRegex(s.getvalue(), r"^\S+Z  INFO newresource_controller_py: newresource-controller stopped\n$")

    def test_a_field_named_message_cannot_replace_the_message(self):
        s = io.StringIO()
        logs.configure("json", stream=s)
        logs.get().info("real", **{"message": "fake"})
        self.assertEqual(json.loads(s.getvalue())["fields"], {"message": "real"})


if __name__ == "__main__":
    unittest.main()
