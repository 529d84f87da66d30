"""The request bodies in ``/openapi.json``.

The routes read their bodies themselves (``protocol.parse``: one 400 shape for every mistake),
so FastAPI cannot see their types; ``request_body`` declares each POST route's body, and
``install`` puts the pydantic models' JSON schemas under ``components/schemas``, so that clients
and fuzzers read the same schema the server validates against.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def request_body(cls: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a POST route whose JSON body is a ``cls``."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": REF.format(model=cls.__name__)}}}}}


def install(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Make ``app.openapi()`` include the schemas of ``models`` (and the models they use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for cls in models:
                own = cls.model_json_schema(ref_template=REF)
                components.update(own.pop("$defs", {}))
                components[cls.__name__] = own
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
