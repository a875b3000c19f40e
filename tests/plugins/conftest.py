# A module that raises at import on purpose (tests/test_config.py loads it as a plug-in).
collect_ignore = ["boom_at_import.py"]
