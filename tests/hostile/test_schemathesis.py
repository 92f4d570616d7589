"""Schemathesis against the app's own OpenAPI schema, on a real uvicorn process: no 5xx, no
response that breaks the schema, every status documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.main import create_app
from app.settings import Settings
from tests.conftest import make_weights
from tests.e2e.test_uvicorn import Server

# The schema comes from the app object itself; building an app loads no model.
schema = schemathesis.openapi.from_dict(create_app(Settings(device="cpu")).openapi())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    weights = make_weights(tmp_path_factory.mktemp("schema-weights"), objectness_bias=6.0)
    instance = Server(Path(weights))
    try:
        instance.wait_ready()
        yield instance
    finally:
        instance.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, server: Server) -> None:
    # A schema cannot say "a decodable JPEG", so schema-valid random bytes are rightly refused:
    # that one check does not apply to an image API. Every other check runs.
    case.call_and_validate(
        base_url=server.url, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )
