"""Real loopback receivers for tests: they collect what arrives and let tests await it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail the test with ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.005)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"1m"``) and at most ``inodes`` files and directories,
    mounted on ``path`` (made if missing), for tests of a full disk; unmounted on the way
    out. Needs root (as CI has): a mount that fails fails the test, saying why."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, text=True, check=False)
    if done.returncode:
        raise AssertionError(
            f"this test needs a small tmpfs: {' '.join(mount)} failed (run as root): "
            f"{done.stderr.strip()}"
        )
    try:
        yield path
    finally:
        # Lazily: a process a failed test left behind may still hold a file there.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full; the file (delete it
    to free the space)."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    probe = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(probe, b"x")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    else:
        raise AssertionError(f"{directory} still takes writes after filling it")
    finally:
        os.close(probe)
        os.unlink(directory / "probe")
    return path


def use_up_inodes(directory: Path) -> list[Path]:
    """Make empty files in ``directory`` until its file system has no inode left (then
    no file or directory can be made there); the files (delete one to make room)."""
    made: list[Path] = []
    while True:
        path = directory / f"inode-{len(made)}"
        try:
            path.touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return made
        made.append(path)


class Receiver:
    """Collects payloads (lines or datagrams) from a loopback socket in a thread."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _add(self, payload: bytes) -> None:
        with self._cond:
            self.payloads.append(payload)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.payloads) >= count, timeout):
                raise AssertionError(f"got {len(self.payloads)} payloads, wanted {count}")
            return list(self.payloads)

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(p) for p in self.payloads]

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)


class StreamReceiver(Receiver):
    """A TCP or unix stream server that splits what it reads into lines.

    ``stop()`` closes the listener and every connection (the server "goes away");
    ``start()`` listens again on the same address.
    """

    def __init__(self, family: int = socket.AF_INET, path: str | None = None) -> None:
        super().__init__()
        self.family = family
        self.path = path
        self.address: Any = path if family == socket.AF_UNIX else ("127.0.0.1", 0)
        self.connections = 0
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def uri(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix://{self.path}"
        return f"tcp://127.0.0.1:{self.address[1]}"

    def start(self) -> StreamReceiver:
        if self.family == socket.AF_UNIX and self.path and os.path.exists(self.path):
            os.unlink(self.path)
        listener = socket.socket(self.family, socket.SOCK_STREAM)
        if self.family != socket.AF_UNIX:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.address)
        listener.listen(16)
        self.address = listener.getsockname()
        self._listener = listener
        self._stop.clear()
        self._spawn(self._accept, listener)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            self._spawn(self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._add(line)


class DatagramReceiver(Receiver):
    """A UDP server that keeps each datagram whole."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._spawn(self._read)

    def uri(self, scheme: str = "udp") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            self._add(data)

    def close(self) -> None:
        self.sock.close()
