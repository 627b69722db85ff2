from __future__ import annotations

import httpx
import pytest

from podium.client import AsyncClient, Client

from .samples import Recorder


@pytest.fixture
def api() -> Recorder:
    return Recorder()


@pytest.fixture
def client(api: Recorder) -> Client:
    return Client("http://podium.test", transport=httpx.MockTransport(api))


@pytest.fixture
def aclient(api: Recorder) -> AsyncClient:
    return AsyncClient("http://podium.test", transport=httpx.MockTransport(api))
