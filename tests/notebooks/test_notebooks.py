"""Every notebook runs top to bottom on the CPU (BUDGET=cpu-tiny, embedded SmolLM2)
exactly as stored, and the stored files match their generator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = ["quickstart_colab.ipynb", "quickstart_modelscope.ipynb", "grpo_gsm8k.ipynb", "dpo.ipynb"]


def test_stored_notebooks_match_generator_and_have_no_outputs():
    import nbformat

    check = subprocess.run([sys.executable, str(NOTEBOOKS_DIR / "build_notebooks.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert "detect_environment" in code[0].source and "TIFA_LITE_BUDGET" in code[1].source
        trains = [c for c in code if "train(" in c.source]
        assert trains and all("train(RECIPE" in c.source for c in trains), name


def test_budget_overrides_and_environment(monkeypatch, tmp_path):
    from tifa_lite.errors import ConfigError
    from tifa_lite.training.notebook import budget_overrides, environment, find_repo_root

    tiny = budget_overrides("cpu-tiny", "grpo", output_dir="x")
    assert tiny["model.name_or_path"] == "smollm2-135m-instruct" and tiny["grpo.num_generations"] == 2
    assert tiny["train.output_dir"] == "x" and budget_overrides("full", "sft") == {}
    with pytest.raises(ConfigError, match="choose one of full, gpu-small, cpu-tiny"):
        budget_overrides("huge")
    for var in ("COLAB_RELEASE_TAG", "COLAB_GPU", "MODELSCOPE_ENVIRONMENT", "DSW_INSTANCE_ID", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(var, raising=False)
    if not Path("/mnt/workspace").is_dir():
        assert environment() == "local"
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_2025")
    assert environment() == "colab"
    assert find_repo_root(NOTEBOOKS_DIR) == NOTEBOOKS_DIR.parent
    assert find_repo_root(tmp_path) is None


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_on_cpu(name, tmp_path, monkeypatch, embedded_model_dir):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TIFA_LITE_BUDGET", "cpu-tiny")
    monkeypatch.setenv("TIFA_LITE_OUTPUT", str(tmp_path))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    for var in ("COLAB_RELEASE_TAG", "COLAB_GPU", "MODELSCOPE_ENVIRONMENT", "DSW_INSTANCE_ID"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "environment: local" in text and "BUDGET=cpu-tiny" in text
    assert any(p.is_dir() for p in tmp_path.iterdir()), "the notebook wrote no run folder"
