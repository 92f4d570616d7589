"""The OpenAPI document, as generated clients and ``/docs`` read it: valid, with the API key's
schemes, readable operation ids, ``Retry-After`` on the 503s and the drawn images as binary."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

OPERATIONS = {
    ("post", "/detect"): "detect",
    ("post", "/v1/vision/detection"): "detection",
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("post", "/v1/vision/custom/list"): "custom_list",
}


@pytest.fixture(scope="module")
def spec(weights_dir):
    from tests.support.app_client import make_client, wait_ready

    with make_client(weights_dir) as client:
        wait_ready(client)
        return client.get("/openapi.json").json()


def test_the_spec_is_valid_openapi(spec):
    validate(spec)


def test_operation_ids_read_like_method_names(spec):
    for (method, path), operation_id in OPERATIONS.items():
        assert spec["paths"][path][method]["operationId"] == operation_id
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and not any(i.endswith("_post") for i in ids)  # not detect_detect_post


def test_the_api_key_is_in_the_spec_both_ways(spec):
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes["APIKeyHeader"].items()
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/detect", "/v1/vision/detection"):
        security = spec["paths"][path]["post"]["security"]
        assert {name for requirement in security for name in requirement} == {"APIKeyHeader", "HTTPBearer"}
        assert {} in security  # no DETECTOR_API_KEY here: the key is optional
    assert "security" not in spec["paths"]["/healthz"]["get"]  # probes stay open


def test_with_a_key_configured_the_spec_requires_it(weights_dir):
    from tests.support.app_client import make_client

    with make_client(weights_dir, api_key="k") as client:
        security = client.get("/openapi.json").json()["paths"]["/detect"]["post"]["security"]
    assert {} not in security and len(security) == 2


def test_503s_say_retry_after_and_drawn_images_are_binary(spec):
    detect = spec["paths"]["/detect"]["post"]
    for path in ("/detect", "/v1/vision/detection"):
        assert "Retry-After" in spec["paths"][path]["post"]["responses"]["503"]["headers"]
    for media in ("image/jpeg", "image/png"):
        assert detect["responses"]["200"]["content"][media]["schema"] == {
            "type": "string",
            "format": "binary",
        }
        assert media in detect["requestBody"]["content"]  # a raw image body is described too


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_outside(weights_dir, page):
    import re

    from tests.support.app_client import make_client

    with make_client(weights_dir) as client:
        html = client.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assets = [s for s in sources if not s.endswith("openapi.json")]
        assert assets and not any(s.startswith(("http:", "https:", "//")) for s in sources), sources
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
