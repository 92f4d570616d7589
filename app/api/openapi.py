"""The OpenAPI document as this deployment behaves: the API key's schemes are optional when no
``DETECTOR_API_KEY`` is set (an empty requirement, ``{}``, beside them), required when one is."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def describe_security(app: FastAPI, key_required: bool) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not key_required:
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    security = operation.get("security")
                    if security is not None and {} not in security:
                        security.append({})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
