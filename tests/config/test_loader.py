from pathlib import Path

import pytest

from tifa_lite.config import dump_config, load_recipe
from tifa_lite.config.loader import RECIPES_DIR, parse_override
from tifa_lite.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    recipe = write(tmp_path, "train:\n  max_step: 3\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    message = str(err.value)
    assert str(recipe) in message
    assert "unknown key 'train.max_step'" in message
    assert "did you mean 'max_steps'" in message


def test_unknown_section_suggests_section(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'lora'"):
        load_recipe(write(tmp_path, "lroa:\n  r: 8\n"))


def test_required_override_keys_exist_and_are_typed(tmp_path):
    recipe = write(tmp_path, "train:\n  max_steps: 100\n")
    config = load_recipe(
        recipe,
        ["train.max_steps=2", "train.output_dir=/tmp/x", "data.path=d.jsonl", "model.name_or_path=smollm2-135m-instruct"],
    )
    assert config.train.max_steps == 2 and isinstance(config.train.max_steps, int)
    assert config.train.output_dir == "/tmp/x"
    assert config.data.path == "d.jsonl"
    assert config.model.name_or_path == "smollm2-135m-instruct"


def test_python_kwargs_overrides_use_double_underscore():
    config = load_recipe({}, {"train__learning_rate": 1e-3, "lora.r": 4})
    assert config.train.learning_rate == 1e-3 and config.lora.r == 4


def test_override_typo_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_recipe({}, ["train.learnig_rate=1e-4"])


def test_bad_value_names_key():
    with pytest.raises(ConfigError, match=r"lora\.r"):
        load_recipe({}, ["lora.r=0"])


def test_qlora_needs_lora():
    with pytest.raises(ConfigError, match="cannot be trained full-parameter"):
        load_recipe({}, ["lora.enabled=false"])
    full = load_recipe({}, ["lora.enabled=false", "quant.bits=null"])
    assert full.quant.bits is None and not full.is_qlora


def test_yaml_syntax_error_names_line(tmp_path):
    recipe = write(tmp_path, "train:\n  max_steps: 2\n  bad: [unclosed\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(recipe)


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe("nope/missing.yaml")


def test_parse_override_requires_equals():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("train.max_steps")


def test_profile_overlay_changes_keys_only(tmp_path):
    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles", "train:\n  learning_rate: 1.0e-5\n", "mine.yaml")
    recipe = write(tmp_path, "profile: mine\ntrain:\n  learning_rate: 2.0e-4\n  max_steps: 7\n")
    config = load_recipe(recipe)
    assert config.train.learning_rate == 1e-5 and config.train.max_steps == 7
    assert config.profile == "mine"


def test_profile_typo_is_reported_against_the_profile_file(tmp_path):
    (tmp_path / "profiles").mkdir()
    profile = write(tmp_path / "profiles", "train:\n  learnin_rate: 1.0e-5\n", "bad.yaml")
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, "train:\n  max_steps: 1\n"), profile="bad")
    assert str(profile) in str(err.value)


def test_unknown_profile_suggests(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe({}, profile="no_such_profile_xyz")


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES_DIR.glob("*.yaml")))
def test_every_shipped_recipe_validates(recipe):
    """Each recipe loads, keeps every value it states, and its printed form loads back unchanged."""
    import yaml

    config = load_recipe(RECIPES_DIR / recipe)
    stated = yaml.safe_load((RECIPES_DIR / recipe).read_text(encoding="utf-8"))
    resolved = config.model_dump(mode="json")
    for section, values in stated.items():
        if section == "profile" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            assert key in resolved[section], f"{recipe}: {section}.{key} vanished"
            if not isinstance(value, (dict, list)):
                assert resolved[section][key] == value or str(resolved[section][key]) == str(value), f"{recipe}: {section}.{key}"
    assert load_recipe(yaml.safe_load(dump_config(config))).model_dump(mode="json") == resolved
