"""``ws://host:port/path`` and ``wss://``: one JSON object per binary websocket message."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from numbat._redact import redact_url, scrub
from numbat.emitter.transport import SendError, Transport


class WebSocketTransport(Transport):
    """Events as binary websocket messages (``JSON + "\\n"``, as the original).

    Uses the ``websockets`` package, imported on first connect so that services that
    never use websockets do not pay for it. Keep-alive pings from the collector are
    answered by the library.
    """

    _ws: Any = None

    def _failed(self, exc: BaseException) -> str:
        """The connect error, with the URI's credentials and token masked."""
        shown = redact_url(self.uri)
        return f"websocket connect to {shown} failed: {scrub(str(exc), self.uri)}"

    def connect(self, timeout: float) -> None:
        from websockets.sync.client import connect

        self.close()
        try:
            # Entered as a context manager: websockets >= 17.1 deprecates a bare connect().
            self._ws = connect(self.uri, open_timeout=timeout, compression=None).__enter__()
        except OSError:
            raise
        except Exception as exc:  # handshake refused, bad status, timeout: all "cannot connect"
            raise ConnectionError(self._failed(exc)) from exc

    def send(self, payloads: Sequence[bytes]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        for sent, payload in enumerate(payloads):
            try:
                self._ws.send(payload)
            except Exception as exc:  # ConnectionClosed and socket errors alike
                raise SendError(sent, exc) from exc

    def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            # Closing a broken connection may fail; there is nothing left to save.
            with contextlib.suppress(Exception):
                ws.close()

    async def aconnect(self, timeout: float) -> None:
        from websockets.asyncio.client import connect

        await self.aclose()
        try:
            self._ws = await connect(self.uri, open_timeout=timeout, compression=None)
        except OSError:
            raise
        except Exception as exc:
            raise ConnectionError(self._failed(exc)) from exc

    async def asend(self, payloads: Sequence[bytes]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        for sent, payload in enumerate(payloads):
            try:
                await self._ws.send(payload)
            except Exception as exc:
                raise SendError(sent, exc) from exc

    async def aclose(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            with contextlib.suppress(Exception):
                await ws.close()
