"""``/openapi.json`` describes what every route returns, so a generated client can use it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.api import create_app


def test_every_json_route_declares_its_response_model(tmp_path: Path) -> None:
    with TestClient(create_app(f"sqlite:///{tmp_path / 'o.db'}", auth=True)) as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    seen = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if not code.startswith("2") or code == "204":
                    continue
                body = response.get("content", {}).get("application/json")
                if body is None:  # the PNG map, Prometheus' text
                    assert response.get("content"), f"{method} {path} {code}: no content type"
                    continue
                got = body.get("schema", {})
                got = got.get("items", got)  # a list of models
                ref = got.get("$ref", "")
                assert ref.startswith("#/components/schemas/"), f"{method} {path}: {got}"
                model = components[ref.rsplit("/", 1)[1]]
                assert model.get("properties"), f"{method} {path}: {ref} has no fields"
                seen += 1
    assert seen >= 15
