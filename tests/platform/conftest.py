from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platform.live import Sockets


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    opened = Sockets()
    yield opened
    opened.close()
