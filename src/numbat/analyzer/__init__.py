"""The analyzer: watches the event stream, decides what is wrong, tells people once.

Data flow (each arrow one way)::

    listener -> engine (rules: plain callables) -> incident manager -> notifiers (queued)
                                                                    \\-> alert events -> store

* :mod:`~numbat.analyzer.model`: Alert, Incident, Silence, Notification;
* :mod:`~numbat.analyzer.rules`: the rule protocol, matching, one module per rule kind;
* :mod:`~numbat.analyzer.engine`: the plain loop that runs rules, with ``for`` and
  ``keep_firing_for``;
* :mod:`~numbat.analyzer.incidents`: dedup, keep-alive, flapping, repeats, silences,
  acknowledgements, inhibition and grouping (the only caller of notifiers);
* :mod:`~numbat.analyzer.state`: the durable state (SQLite in ``data_dir``);
* :mod:`~numbat.analyzer.notifiers`: one module per notifier, each behind its own queue;
* :mod:`~numbat.analyzer.api`: the HTTP API; :mod:`~numbat.analyzer.daemon`: the daemon.
"""
