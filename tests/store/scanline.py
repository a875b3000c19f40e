"""influxd's own way of cutting a request body into lines, as a reference for tests."""

from __future__ import annotations


def scan_line_ends(buf: bytes) -> list[int]:
    """influxd 1.6's scanLine (models/points.go), byte by byte as written in Go: the end
    of every line (the offset after its newline), for comparison."""
    ends: list[int] = []
    pos = 0
    while pos < len(buf):
        i, quoted, fields, equals, commas = pos, False, False, 0, 0
        while i < len(buf):
            if buf[i] == ord("\\") and i + 2 < len(buf):
                i += 2
                continue
            if buf[i] == ord(" "):
                fields = True
            if fields:
                if not quoted and buf[i] == ord("="):
                    i += 1
                    equals += 1
                    continue
                if not quoted and buf[i] == ord(","):
                    i += 1
                    commas += 1
                    continue
                if buf[i] == ord('"') and equals > commas:
                    i += 1
                    quoted = not quoted
                    continue
            if buf[i] == ord("\n") and not quoted:
                break
            i += 1
        pos = i + 1  # past the newline (ParsePoints: pos++)
        ends.append(min(pos, len(buf)))
    return ends
