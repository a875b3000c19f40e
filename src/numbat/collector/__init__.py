"""The collector: a daemon on every host that receives events and fans them out.

``numbat collector -c numbat.toml`` runs :class:`numbat.collector.daemon.Collector` on
the shared daemon toolkit (:mod:`numbat.server`: listeners, framing, stats, lifecycle,
supervisor); its outputs live in :mod:`numbat.collector.outputs`. The collector never
imports the analyzer or the dashboard, which it reaches over the wire.
"""
