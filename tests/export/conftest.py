"""The llama.cpp group is opt-in (`pytest -m llamacpp`): it needs llama-cpp-python, which
`bash scripts/install_llama_cpp.sh` builds once from PyPI's source distribution. Without the
opt-in, or without the build, its tests are reported as skipped with the reason."""

from __future__ import annotations

import pytest


@pytest.fixture
def llama_cpp(request):
    if "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group: run `bash scripts/install_llama_cpp.sh` once, then `pytest -m llamacpp`")
    from tifa_lite.export.llamacpp_check import INSTALL_HINT

    return pytest.importorskip("llama_cpp", reason=INSTALL_HINT)
