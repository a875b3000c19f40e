from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DatagramReceiver, StreamReceiver


@pytest.fixture
def tcp_receiver() -> Iterator[StreamReceiver]:
    receiver = StreamReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def unix_receiver(tmp_path: Path) -> Iterator[StreamReceiver]:
    receiver = StreamReceiver(socket.AF_UNIX, str(tmp_path / "numbat.sock")).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def udp_receiver() -> Iterator[DatagramReceiver]:
    receiver = DatagramReceiver()
    yield receiver
    receiver.close()
