"""Recipe files → validated :class:`RecipeConfig`.

Order of application: recipe YAML → profile overlays (``profile:`` in the recipe,
then ``--profile``) → dotted overrides. Profiles are plain YAML overlays that
change keys; they never select code paths.
"""

from __future__ import annotations

import logging

import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from tifa_lite.errors import ConfigError
from tifa_lite.config.schema import RecipeConfig, zero3_quant_error

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = PACKAGE_ROOT / "recipes"
PROFILES_DIR = RECIPES_DIR / "profiles"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the later of two equal keys in a mapping without a word; a recipe that
    says ``max_steps`` twice is a mistake in one of the two lines, so both are named."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKeyError(
                    None, None, f"the key {key!r} appears twice, on lines {first} and {key_node.start_mark.line + 1}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file. Check the path (recipes live in {RECIPES_DIR}).")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}:{exc.problem_mark.line + 1}: {exc.problem}; delete one of them.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    if data is None and what == "recipe":
        # An empty file would train on every default: almost surely not what was meant.
        raise ConfigError(f"{path}: the recipe is empty. Start from one in {RECIPES_DIR} (e.g. sft_qlora_roleplay.yaml).")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections (model:, data:, train:, …).")
    return data


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# dotted.key, its parts words; a pipeline's ``*.key`` (every stage) and STAGE-name prefixes too.
OVERRIDE_KEY = re.compile(r"^(\*|[A-Za-z_][A-Za-z0-9_-]*)(\.[A-Za-z0-9_-]+)*$")


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.max_steps=2")
    key, raw = item.split("=", 1)
    if not OVERRIDE_KEY.match(key.strip()):
        what = "nothing before '='" if not key.strip() else f"{key.strip()!r} is not a dotted key"
        raise ConfigError(f"override {item!r} is malformed ({what}): expected dotted.key=value, e.g. train.max_steps=3")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def resolve_profile_path(name: str, recipe_dir: Path | None = None) -> Path:
    candidates = [Path(name)]
    if recipe_dir is not None:
        candidates.append(recipe_dir / name)
        candidates.append(recipe_dir / "profiles" / f"{name}.yaml")
    candidates.append(PROFILES_DIR / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    hint = _suggest(name, known)
    raise ConfigError(f"profile {name!r} not found{hint}. Known profiles: {', '.join(known) or 'none'}.")


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = RecipeConfig
    for part in path:
        if model is None or not isinstance(part, str):
            return model if isinstance(part, int) else None
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        model = _first_model(annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(
    exc: ValidationError, source: str, origins: Mapping[str, str] | None = None, tree: Mapping[str, Any] | None = None,
) -> str:
    """One line per problem; ``origins`` (dotted key → where it was set) adds, for a rule
    between keys, one line per key naming the profile, override or recipe that set it."""
    lines = [f"{source}: invalid recipe"]
    origins = origins or {}
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        message = str((err.get("ctx") or {}).get("error") or err.get("msg"))
        if err.get("type") == "extra_forbidden":
            parent = _model_at(loc[:-1])
            options = list(parent.model_fields) if parent else []
            hint = _suggest(str(loc[-1]), options)
            valid = f" Valid keys here: {', '.join(options)}." if options else ""
            lines.append(f"  unknown key '{dotted}'{hint}.{valid}")
        elif not loc:
            # A rule between keys: its input is the whole config, which names nothing; the keys do.
            lines.append(f"  {message}")
            for key in dict.fromkeys(CONFLICT_KEY.findall(message)):
                if key in origins:
                    value = yaml.safe_dump(_get_dotted(tree or {}, key), default_flow_style=True).strip().removesuffix("...").strip()
                    lines.append(f"  {key}={value}: set by {origins[key]}")
        else:
            origin = f", set by {origins[dotted]}" if dotted in origins else ""
            lines.append(f"  {dotted}: {message} (got {err.get('input')!r}{origin})")
    return "\n".join(lines)


CONFLICT_KEY = re.compile(r"\b([a-z_]+\.[a-z_0-9]+)=")


def _get_dotted(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaf_keys(value, dotted + ".")
        else:
            yield dotted


def load_recipe(
    recipe: str | Path | Mapping[str, Any] | RecipeConfig,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    profile: str | list[str] | None = None,
) -> RecipeConfig:
    """Build the resolved config. ``overrides`` is ``{"train.max_steps": 2}`` or ``["train.max_steps=2"]``."""
    if isinstance(recipe, RecipeConfig):
        tree, source, recipe_dir = recipe.model_dump(), "<config>", None
    elif isinstance(recipe, Mapping):
        tree, source, recipe_dir = dict(recipe), "<dict>", None
    else:
        path = Path(recipe)
        tree, source, recipe_dir = read_yaml(path), str(path), path.resolve().parent

    origins = dict.fromkeys(_leaf_keys(tree), f"the recipe {source}")
    profiles = _as_list(tree.pop("profile", None)) + _as_list(profile)
    for name in profiles:
        profile_path = resolve_profile_path(name, recipe_dir)
        overlay = read_yaml(profile_path, what="profile")
        overlay.pop("profile", None)
        overlay.pop("description", None)
        _validate_partial(overlay, str(profile_path))
        tree = deep_merge(tree, overlay)
        origins.update(dict.fromkeys(_leaf_keys(overlay), f"profile {name} ({profile_path})"))

    for key, value in override_items(overrides):
        set_dotted(tree, key, value)
        origins[key] = f"the override {key}={value}"
    if profiles:
        tree["profile"] = profiles if len(profiles) > 1 else profiles[0]

    try:
        config = RecipeConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, origins, tree)) from None
    config = _check_explicit_batch(config, origins)
    _check_method_sections(config, origins)
    _check_template_file(config)
    _resolve_relative_paths(config, recipe_dir)
    if (zero3 := zero3_quant_error(config)) is not None:  # the JSON may only be found once resolved
        raise ConfigError(f"{source}: {zero3}")
    return config


def _check_explicit_batch(config: RecipeConfig, origins: Mapping[str, str]) -> RecipeConfig:
    """The batch rule (tifa_lite.distributed.batch) keeps train.global_batch_size and derives
    the accumulation from it, which would silently replace an accumulation given as an
    override. The key the user typed wins over the recipe's (with a line naming both); two
    overrides that contradict each other are refused, naming both."""
    t, d = config.train, config.distributed
    ga_origin = origins.get("train.gradient_accumulation_steps", "")
    if not ga_origin.startswith("the override") or t.global_batch_size is None:
        return config
    micro = d.micro_batch_size or t.per_device_batch_size
    world = d.world_size or 1
    product = micro * t.gradient_accumulation_steps * world
    if product == t.global_batch_size:
        return config
    gb_origin = origins.get("train.global_batch_size", "the recipe")
    if not gb_origin.startswith("the override"):
        log.warning(
            "train.gradient_accumulation_steps=%s (given as an override) replaces train.global_batch_size=%s (set by "
            "%s): the global batch is now %s per device × %s × world size %s = %s.",
            t.gradient_accumulation_steps, t.global_batch_size, gb_origin, micro, t.gradient_accumulation_steps,
            world, product)
        config.train.global_batch_size = None
        return config
    raise ConfigError(
        f"train.gradient_accumulation_steps={t.gradient_accumulation_steps} (given as an override) conflicts with "
        f"train.global_batch_size={t.global_batch_size} (set by {gb_origin}): "
        f"{micro} per device × {t.gradient_accumulation_steps} × world size {world} = {product}. Set "
        f"train.global_batch_size={product}, or train.global_batch_size=null to use the accumulation as given."
    )


# Recipe sections read by some methods only.
SECTION_METHODS = {"dpo": ("dpo", "orpo", "kto", "simpo"), "grpo": ("grpo",)}


def _check_method_sections(config: RecipeConfig, origins: Mapping[str, str]) -> None:
    """An override of a section the run's method never reads (``dpo.beta`` on an SFT run)
    would change nothing: most often the method itself was meant to be changed too."""
    method = config.train.method
    for key, origin in origins.items():
        section = key.split(".", 1)[0]
        if origin.startswith("the override") and section in SECTION_METHODS and method not in SECTION_METHODS[section]:
            used_by = "/".join(SECTION_METHODS[section])
            raise ConfigError(
                f"{origin.removeprefix('the ')}: {section}.* is read by train.method={used_by} only, and this run is "
                f"train.method={method}, so it would change nothing. Set train.method={SECTION_METHODS[section][0]} "
                "too, or drop the override."
            )


def _check_template_file(config: RecipeConfig) -> None:
    """A ``.jinja`` chat template that is not there, named as a missing file now rather than
    as an unknown template name once the tokenizer has loaded."""
    choice = config.model.chat_template
    if choice and choice.endswith(".jinja") and not Path(choice).expanduser().is_file():
        raise ConfigError(
            f"model.chat_template={choice}: no such file (looked from {Path.cwd()}). Check the path, or use a "
            "named template, or null for the tokenizer's own."
        )


def _validate_partial(overlay: dict[str, Any], source: str) -> None:
    """Catch typos in a profile at the profile's own name, not the recipe's."""
    try:
        RecipeConfig.model_validate(overlay)
    except ValidationError as exc:
        unknown = [e for e in exc.errors() if e.get("type") == "extra_forbidden"]
        if unknown:
            raise ConfigError(format_validation_error(exc, source)) from None


def override_items(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # Python callers may write train__max_steps=2 since dots are not valid kwargs.
        return [(k.replace("__", "."), v) for k, v in overrides.items()]
    return [parse_override(item) for item in overrides]


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _resolve_relative_paths(config: RecipeConfig, recipe_dir: Path | None) -> None:
    """A DeepSpeed JSON named relative to the recipe is found from any working directory."""
    ds = config.distributed.deepspeed
    if ds and not Path(ds).is_absolute() and not Path(ds).exists():
        for base in filter(None, (recipe_dir, RECIPES_DIR, PACKAGE_ROOT)):
            if (base / ds).exists():
                config.distributed.deepspeed = str(base / ds)
                break


def dump_config(config: RecipeConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
