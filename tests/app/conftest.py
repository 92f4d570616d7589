from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.app_client import make_client, wait_ready


@pytest.fixture
def client(weights_dir: Path) -> Iterator[TestClient]:
    with make_client(weights_dir) as test_client:
        wait_ready(test_client)
        yield test_client
