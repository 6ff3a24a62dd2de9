"""A live server on 127.0.0.1 around the tiny model, shared by the serving tests."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def tiny_session(tiny_model_dir):
    from tifa_lite.conversation.session import chat

    # Greedy, so a reply can be compared across the API, the stream and the session itself.
    return chat(str(tiny_model_dir), preset="greedy", max_new_tokens=6)


def _run(chat_server):
    """Serve ``chat_server`` on a free 127.0.0.1 port in a thread; yields its URL."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
    from tifa_lite.serving.openai_api import build_app

    yield from _serve_asgi(build_app(chat_server))


def _serve_asgi(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start on 127.0.0.1 within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="package")
def live_server(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer

    chat_server = ChatServer(tiny_session, "tiny", context_length=256)
    for url in _run(chat_server):
        yield chat_server, url


@pytest.fixture(scope="package")
def wide_server(tiny_session):
    """The model's whole 2048-token context (front ends send long histories and max_tokens of
    hundreds) with replies capped at 8 tokens, so the tests stay fast."""
    from tifa_lite.serving.openai_api import ChatServer

    chat_server = ChatServer(tiny_session, "tiny", max_tokens_cap=8)
    for url in _run(chat_server):
        yield chat_server, url


@pytest.fixture(scope="module")
def llama_cpp_server(request):
    """llama-cpp-python with its server extra, in the opt-in `llamacpp` group only."""
    if "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group: run `bash scripts/install_llama_cpp.sh` once, then `pytest -m llamacpp`")
    from tifa_lite.serving.llamacpp_engine import SERVER_HINT

    pytest.importorskip("llama_cpp", reason=SERVER_HINT)
    return pytest.importorskip("llama_cpp.server.app", reason=SERVER_HINT)
