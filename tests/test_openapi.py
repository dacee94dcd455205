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


def test_docs_pages_load_only_files_this_server_serves(tmp_path: Path) -> None:
    """/docs and /redoc work offline: every script, style and icon they reference is served here
    (FastAPI's own pages load them from a CDN, blank without internet). They and the schema are
    public, as the README says; the API itself needs a token."""
    import re

    with TestClient(create_app(f"sqlite:///{tmp_path / 'd.db'}", auth=True)) as client:
        for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html = client.get(page)
            assert html.status_code == 200, page
            refs = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert any(r.endswith(script) for r in refs), (page, refs)
            for ref in refs:
                assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
                got = client.get(ref)
                assert got.status_code == 200 and len(got.content) > 1000, (page, ref)
            assert "http://" not in html.text and "https://" not in html.text, page
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/api/v1/studies").status_code == 401
