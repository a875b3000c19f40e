"""``unix:///path``: NDJSON over a unix stream socket; a stale socket file is replaced."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

from numbat.config import UnixListenerConfig
from numbat.server.listeners.accept import bind_unix
from numbat.server.listeners.stream import StreamListener


class UnixListener(StreamListener):
    """The cheapest way for services on the host to reach their collector.

    A socket file left by a collector that died is removed; one that a live process
    still answers on is an error (``EADDRINUSE``), never silently taken over. A path is
    bound by one process: with ``workers = N``, worker 0 alone serves it
    (``UnixListenerConfig.first_process_only``).
    """

    Options = UnixListenerConfig

    async def _bind(self) -> list[socket.socket]:
        path = Path(urlsplit(self.options.uri).path)
        _remove_stale(path)
        return [bind_unix(str(path))]

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(FileNotFoundError):
            Path(urlsplit(self.options.uri).path).unlink()


def _remove_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: a leftover
        return
    finally:
        probe.close()
    raise OSError(98, f"{path} is in use by another process")
