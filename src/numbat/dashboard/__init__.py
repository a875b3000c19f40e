"""The dashboard: one page with the alert status (from the analyzer's HTTP API) and
graphs (from the Store interface), live. :class:`~numbat.dashboard.app.Dashboard` is
the daemon ``numbat dashboard`` and ``numbat up`` run."""
