"""Which ``Host`` a daemon's HTTP API answers: the guard against DNS rebinding.

A web page open in a browser on the machine can make its own name resolve to
127.0.0.1 and then talk to a loopback API as a same-origin page (its ``Origin`` and
``Host`` both say its own name). An API bound to loopback therefore answers only
requests whose ``Host`` names loopback (``localhost``, ``127.0.0.1``, ``[::1]``) or its
own listen address; one bound beyond loopback needs a token anyway (the config says so).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback.

    >>> [is_loopback(h) for h in ("127.0.0.1", "[::1]", "localhost", "evil.example")]
    [True, True, True, False]
    """
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, listen_host: str) -> bool:
    """Whether a request with ``Host: host_header`` may be answered by an API listening
    on ``listen_host``: always when it listens beyond loopback (its token guards it),
    else only when the header names loopback or the listen address itself.

    >>> host_allowed("127.0.0.1:3338", "127.0.0.1"), host_allowed("evil.example:3338", "127.0.0.1")
    (True, False)
    >>> host_allowed("numbat.example:3338", "0.0.0.0")
    True
    """
    if not is_loopback(listen_host):
        return True
    name = urlsplit(f"//{host_header}").hostname or ""
    return is_loopback(name) or name == listen_host.strip("[]").lower()
