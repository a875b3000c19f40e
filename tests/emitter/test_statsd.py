"""statsd:// lines, byte for byte, as a statsd server receives them over UDP."""

from __future__ import annotations

from typing import Any

import pytest

from numbat import Emitter
from tests.helpers import DatagramReceiver


@pytest.mark.parametrize(
    ("attrs", "line"),
    [
        ({"name": "hits"}, b"app.hits:1|c"),
        ({"name": "hits", "count": 5}, b"app.hits:5|c"),
        ({"name": "hits", "count": 5, "rate": 0.1}, b"app.hits:5|c|@0.1"),
        ({"name": "hits", "rate": 0.5}, b"app.hits:1|c|@0.5"),
        ({"name": "temp", "value": 21.5}, b"app.temp:21.5|g"),
        ({"name": "temp", "value": 3.0}, b"app.temp:3|g"),
        ({"name": "temp", "value": 3.0, "rate": 0.5}, b"app.temp:3|g"),
        ({"name": "db", "timing": 12}, b"app.db:12|ms"),
        ({"name": "users", "set": "u42"}, b"app.users:u42|s"),
        ({"name": "r", "count": 1, "route": "/a", "ok": True}, b"app.r:1|c|#route:/a,ok:true"),
        ({"name": "r", "value": 1, "user.id": 7, "a b@c": "x"}, b"app.r:1|g|#user_id:7,a_b_c:x"),
        ({"name": "r", "value": 1, "tag": "a,b|c:d e"}, b"app.r:1|g|#tag:a_b_c_d_e"),
        ({"name": "bad:na|me", "value": 1}, b"app.bad_na_me:1|g"),
        ({"name": "hits", "value": 2, "type": "counter"}, b"app.hits:2|c|#type:counter"),
        ({"name": "db", "value": 7.5, "type": "timing"}, b"app.db:7.5|ms|#type:timing"),
        ({"name": "q", "value": 7, "type": "gauge"}, b"app.q:7|g|#type:gauge"),
        ({"name": "hits", "count": 3, "type": "counter"}, b"app.hits:3|c|#type:counter"),
        (
            {"name": "r", "value": 1, "hostname": "h", "timeout": 3},
            b"app.r:1|g|#hostname:h,timeout:3",
        ),
    ],
)
def test_statsd_line(udp_receiver: DatagramReceiver, attrs: dict[str, Any], line: bytes) -> None:
    """Gauges, counters, rates, timings, sets and tag sanitising give these exact bytes."""
    em = Emitter(udp_receiver.uri("statsd"), app="app", host="")
    em._defaults.clear()  # no host tag, so the expected lines stay short
    em.metric(attrs)
    assert em.flush(10)
    assert udp_receiver.wait_for(1) == [line]
    em.close(1)


def test_statsd_host_and_node_become_tags(udp_receiver: DatagramReceiver) -> None:
    """The emitter's host and node defaults are sent as DogStatsD tags."""
    em = Emitter(udp_receiver.uri("statsd"), app="app", node="n1", host="web-1")
    em.metric("up", count=1)
    assert em.flush(10)
    assert udp_receiver.wait_for(1) == [b"app.up:1|c|#host:web-1,node:n1"]
    em.close(1)
