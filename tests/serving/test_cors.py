"""``--cors-origin``: a browser page from an allowed origin (Open WebUI's Direct Connections)
gets its preflight answered and may read the replies; other origins, and every origin when the
flag is not given, do not."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

WEBUI = "http://localhost:3000"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def _client(tiny_session, origins):
    from starlette.testclient import TestClient

    from tifa_lite.serving.openai_api import ChatServer, build_app

    return TestClient(build_app(ChatServer(tiny_session, "tiny", max_tokens_cap=2), cors_origins=origins))


def test_preflight_from_an_allowed_origin_is_answered(tiny_session):
    with _client(tiny_session, [WEBUI, "https://chat.example"]) as client:
        r = client.options("/v1/chat/completions", headers={"Origin": WEBUI, **PREFLIGHT})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == WEBUI
        assert "POST" in r.headers["access-control-allow-methods"]
        assert {"authorization", "content-type"} <= {h.strip() for h in r.headers["access-control-allow-headers"].lower().split(",")}
        ok = client.post("/v1/chat/completions", headers={"Origin": WEBUI},
                         json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == WEBUI
        assert client.get("/v1/models", headers={"Origin": WEBUI}).headers["access-control-allow-origin"] == WEBUI
        other = client.options("/v1/chat/completions", headers={"Origin": "http://evil.example", **PREFLIGHT})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_any_origin_with_star(tiny_session):
    with _client(tiny_session, ["*"]) as client:
        r = client.options("/v1/completions", headers={"Origin": "http://anywhere.example", **PREFLIGHT})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_no_cross_origin_access_by_default(tiny_session):
    with _client(tiny_session, None) as client:
        r = client.options("/v1/chat/completions", headers={"Origin": WEBUI, **PREFLIGHT})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_serve_command_passes_the_origins(tiny_model_dir, monkeypatch):
    from tifa_lite.cli import main
    from tifa_lite.serving import openai_api

    seen = {}
    monkeypatch.setattr(openai_api, "serve", lambda server, host, port, cors_origins=None: seen.update(
        cors=cors_origins))
    assert main(["serve", "--model", str(tiny_model_dir), "--cors-origin", WEBUI, "--cors-origin", "*"]) == 0
    assert seen["cors"] == [WEBUI, "*"]
