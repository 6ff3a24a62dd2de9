import subprocess
import sys

import yaml

from tifa_lite.cli import main
from tifa_lite.config.loader import RECIPES_DIR

RECIPE = str(RECIPES_DIR / "sft_qlora_roleplay.yaml")


def test_config_prints_resolved_recipe_with_overrides(capsys):
    assert main(["config", RECIPE, "train.max_steps=2", "model.name_or_path=smollm2-135m-instruct"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["max_steps"] == 2
    assert resolved["model"]["name_or_path"] == "smollm2-135m-instruct"
    assert resolved["quant"]["bits"] == 4


def test_bad_key_is_a_clear_error_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "tifa_lite", "train", RECIPE, "train.max_step=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "unknown key 'train.max_step' (did you mean 'max_steps'?)" in proc.stderr
    assert RECIPE in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_is_a_clear_error(capsys, tmp_path):
    code = main(["train", RECIPE, "model.name_or_path=smollm2-135m-instruct", f"data.path={tmp_path}/none.jsonl",
                 f"train.output_dir={tmp_path}/out"])
    assert code == 2
    assert "none.jsonl does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_overrides_may_follow_options(capsys):
    assert main(["config", RECIPE, "--profile", "t4", "train.max_steps=3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["max_steps"] == 3 and resolved["train"]["precision"] == "fp16"


def test_output_is_the_one_spelling_and_out_a_hidden_alias(capsys):
    from tifa_lite.cli import build_parser

    parser = build_parser()
    for argv in (["pairs", "reference-vs-self", "--data", "d.jsonl"], ["data", "roleplay", "--texts", "t", "--character", "C"],
                 ["export", "xtuner", "recipe.yaml"]):
        assert parser.parse_args([*argv, "--output", "o"]).output == "o"
        assert parser.parse_args([*argv, "--out", "o"]).output == "o"
    import pytest

    with pytest.raises(SystemExit):
        parser.parse_args(["pairs", "reference-vs-self", "--help"])
    usage = capsys.readouterr().out
    assert "--output" in usage and "--out " not in usage and "--out\n" not in usage
