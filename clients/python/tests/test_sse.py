"""Server-sent events parsing: multi-line data, comments, chunks split anywhere, bounds."""

import unittest

import support  # noqa: F401
from leader_client.follow import SourceError, SseEvent, SseParser

STREAM = (
    b": a comment\n"
    b"event: leader\n"
    b'data: {"a":1}\n'
    b"\n"
    b"event: other\n"
    b"data: x\n"
    b"\n"
    b"data: first\n"
    b"data: second\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"\n"
    b"event: leader\n"
    b"data:no-space\n"
    b"\n"
    b"event: empty\n"
    b"\n"
)
EXPECTED = [
    SseEvent("leader", '{"a":1}'),
    SseEvent("other", "x"),
    SseEvent("message", "first\nsecond"),
    SseEvent("leader", "no-space"),
]


class SseTests(unittest.TestCase):
    def test_whole_stream(self):
        self.assertEqual(SseParser().feed(STREAM), EXPECTED)

    def test_any_chunking_gives_the_same_events(self):
        for size in (1, 2, 3, 7, 16):
            p = SseParser()
            out = []
            for i in range(0, len(STREAM), size):
                out += p.feed(STREAM[i:i + size])
            self.assertEqual(out, EXPECTED, f"chunks of {size}")

    def test_line_endings_crlf_and_cr_even_split_across_chunks(self):
        p = SseParser()
        out = p.feed(b"event: leader\r")
        out += p.feed(b"\ndata: 1\r\n\r")
        out += p.feed(b"\n")
        out += p.feed(b"event: leader\rdata: 2\r\r")
        self.assertEqual(out, [SseEvent("leader", "1"), SseEvent("leader", "2")])

    def test_a_partial_event_is_not_dispatched(self):
        p = SseParser()
        self.assertEqual(p.feed(b"event: leader\ndata: {\"is_leader\""), [])
        self.assertEqual(p.feed(b":true}\n"), [])
        self.assertEqual(p.feed(b"\n"), [SseEvent("leader", '{"is_leader":true}')])

    def test_a_leading_bom_is_ignored(self):
        self.assertEqual(SseParser().feed(b"\xef\xbb\xbfevent: leader\ndata: 1\n\n"), [SseEvent("leader", "1")])

    def test_lines_and_events_are_bounded(self):
        p = SseParser(limit=64)
        with self.assertRaises(SourceError):
            p.feed(b"data: " + b"x" * 100)
        p = SseParser(limit=64)
        with self.assertRaises(SourceError):
            for _ in range(10):
                p.feed(b"data: " + b"x" * 20 + b"\n")


if __name__ == "__main__":
    unittest.main()
