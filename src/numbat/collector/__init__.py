"""The collector: a daemon on every host that receives events and fans them out.

``numbat collector -c numbat.toml`` runs :class:`numbat.collector.daemon.Collector`.
Listeners live in :mod:`numbat.collector.listeners`, outputs in
:mod:`numbat.collector.outputs`; the collector never imports the analyzer or the
dashboard, which it reaches over the wire.
"""
