"""Bad recipes, profiles and overrides: refused at load, one line per problem, naming the
key, where it was set and what to do; never the whole config dict."""

from __future__ import annotations

from tests.bad_input.conftest import RECIPE, assert_refused


def test_max_steps_zero_is_refused(cli):
    outcome = cli("config", RECIPE, "train.max_steps=0")
    assert_refused(outcome, "train.max_steps", "must be at least 1", "or -1, the default",
                   "set by the override train.max_steps=0")


def test_negative_max_steps_is_refused(cli):
    assert_refused(cli("config", RECIPE, "train.max_steps=-5"), "train.max_steps", "must be at least 1")


def test_max_steps_unset_still_loads(cli):
    outcome = cli("config", RECIPE, "train.max_steps=-1")
    assert outcome.code == 0 and "max_steps: -1" in outcome.out


def test_profile_conflict_names_the_profile_and_the_keys_one_line_each(cli):
    outcome = cli("config", RECIPE, "--profile", "h100x16_zero3", "quant.bits=4")
    assert_refused(outcome, "quant.bits=4 with lora.enabled=false", "Set lora.enabled=true (QLoRA) or quant.bits=null")
    lines = outcome.err.strip().splitlines()
    assert any(line.strip() == "quant.bits=4: set by the override quant.bits=4" for line in lines), outcome.err
    assert any(line.strip().startswith("lora.enabled=false: set by profile h100x16_zero3 (") for line in lines), outcome.err
    assert "{" not in outcome.err and "description" not in outcome.err  # no dump of the whole config
    assert len(lines) <= 5


def test_conflict_set_in_the_recipe_names_the_recipe(cli, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("quant:\n  bits: 4\nlora:\n  enabled: false\n")
    outcome = cli("config", recipe)
    assert_refused(outcome, f"lora.enabled=false: set by the recipe {recipe}", f"quant.bits=4: set by the recipe {recipe}")


def test_misspelt_key_suggests_the_right_one(cli):
    outcome = cli("config", RECIPE, "train.learnig_rate=1e-4")
    assert_refused(outcome, "unknown key 'train.learnig_rate'", "learning_rate")


def test_misspelt_key_in_a_profile_names_the_profile(cli, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text("train:\n  max_stepz: 3\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.read_text())
    outcome = cli("config", recipe, "--profile", "mine")
    assert_refused(outcome, str(tmp_path / "profiles" / "mine.yaml"), "unknown key 'train.max_stepz'", "max_steps")


def test_unknown_profile(cli):
    assert_refused(cli("config", RECIPE, "--profile", "h200x99"), "profile 'h200x99' not found", "Known profiles:")


def test_yaml_syntax_error_names_the_line(cli, tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("train:\n  max_steps: 2\n  output_dir: [unclosed\n")
    assert_refused(cli("config", recipe), f"{recipe}:", "not valid YAML")


def test_recipe_that_does_not_exist(cli, tmp_path):
    assert_refused(cli("config", tmp_path / "nope.yaml"), "nope.yaml: no such recipe file", "Check the path")


def test_wrong_type_names_the_key_and_the_value(cli):
    outcome = cli("config", RECIPE, "train.learning_rate=fast")
    assert_refused(outcome, "train.learning_rate", "'fast'", "set by the override train.learning_rate=fast")


def test_override_without_a_value(cli):
    assert_refused(cli("config", RECIPE, "train.max_steps"), "override 'train.max_steps'", "expected dotted.key=value")
