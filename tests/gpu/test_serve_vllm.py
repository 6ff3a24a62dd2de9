"""`serve --engine vllm` for real: `vllm serve` with the check's base model, the T4-mode SFT
adapter (--enable-lora), our template and sampling, answering a SillyTavern-shaped request
and the openai client; where vllm is installed on a CUDA machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time

import pytest

from tests.serving.conftest import free_port
from tests.serving.frontend_requests import HELLO, SILLYTAVERN_GROUP_CHAT

from . import support

pytestmark = [*support.pytestmark, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                       reason="vllm is not installed on this machine")]


def test_vllm_serves_the_adapter_with_our_template(gpu_model_dir, t4_sft, tmp_path):
    httpx = pytest.importorskip("httpx")
    from tifa_lite.serving.engines import engine_spec
    from tifa_lite.serving.vllm_engine import vllm_command, write_template

    spec = engine_spec(str(gpu_model_dir), str(t4_sft["result"].output_dir), "tifa", preset="greedy", max_tokens_cap=16)
    port = free_port()
    cmd = vllm_command(spec, write_template(spec, tmp_path), "127.0.0.1", port, max_model_len=1024)
    cmd += ["--gpu-memory-utilization", "0.3", "--enforce-eager"]
    log = open(tmp_path / "vllm.log", "w")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        while True:
            assert process.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not come up within 7 minutes"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        models = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]
        assert "tifa" in models and "tifa-base" in models
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                       json={**SILLYTAVERN_GROUP_CHAT, "model": "tifa", "stop": ["\nCloud:"]})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 16  # --override-generation-config's max_new_tokens
        plain = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={"model": "tifa", "messages": HELLO})
        again = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={"model": "tifa", "messages": HELLO})
        assert plain.json()["choices"][0]["message"] == again.json()["choices"][0]["message"]  # greedy defaults
        support.Results.add("serve --engine vllm", models=",".join(models),
                            completion_tokens=r.json()["usage"]["completion_tokens"],
                            defaults=json.dumps(json.loads(cmd[cmd.index("--override-generation-config") + 1])))
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
