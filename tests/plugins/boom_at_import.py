"""A plug-in module whose import raises (a bug, or a missing dependency)."""

raise RuntimeError("boom at import")
