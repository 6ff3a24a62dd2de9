"""model.name_or_path (+ source) → something ``from_pretrained`` can open."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError
from tifa_lite.modeling import embedded
from tifa_lite.verify import check_weights_folder


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # local folder or hub id, as from_pretrained takes it
    gguf_file: str | None = None
    # Where the weights came from, recorded in outputs so merge/export find the base again.
    origin: str = ""


def source_kwargs(cfg: ModelConfig, resolved: ResolvedModel) -> dict:
    """What ``from_pretrained(resolved.path, ...)`` needs besides the path to open exactly this
    base: the revision, the GGUF file inside the folder, remote code. Every load of the base
    (tokenizer, policy, the reference model TRL builds) passes the same."""
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def resolve_model(cfg: ModelConfig) -> ResolvedModel:
    name = cfg.name_or_path
    source = cfg.source
    if source in ("auto", "embedded") and embedded.is_embedded(name):
        return ResolvedModel(str(embedded.embedded_checkpoint(name)), origin=f"embedded:{name.lower()}")
    if source == "embedded":
        raise ConfigError(
            f"model.name_or_path={name!r} is not an embedded model; embedded: {', '.join(embedded.EMBEDDED_MODELS)}"
        )
    if source == "modelscope":
        from tifa_lite.hub import modelscope_local_or_reachable

        cached = modelscope_local_or_reachable(name)
        if cached is not None:
            return ResolvedModel(str(cached), origin=f"modelscope:{name}")
        try:
            from modelscope import snapshot_download
        except ImportError:
            raise ConfigError(
                "model.source=modelscope needs the modelscope package: pip install modelscope"
            ) from None
        return ResolvedModel(snapshot_download(name, revision=cfg.revision), origin=f"modelscope:{name}")

    path = Path(name).expanduser()
    if path.suffix == ".gguf" or cfg.gguf_file:
        gguf = path if path.suffix == ".gguf" else path / str(cfg.gguf_file)
        if not gguf.is_file():
            raise ConfigError(f"model.name_or_path: GGUF file {gguf} not found.")
        return ResolvedModel(str(gguf.parent), gguf_file=gguf.name, origin=f"gguf:{gguf.resolve()}")
    if path.exists():
        if not (path / "config.json").is_file():
            hint = " It looks like a LoRA adapter; set model.name_or_path to its base." if (path / "adapter_config.json").is_file() else ""
            raise ConfigError(f"model.name_or_path: {path} has no config.json, so it is not a model folder.{hint}")
        check_weights_folder(path)  # a cut-short shard fails here, not minutes into the load
        return ResolvedModel(str(path.resolve()), origin=f"local:{path.resolve()}")
    if source == "local" or name.startswith((".", "/", "~")):
        from tifa_lite.hub import close_folders

        near = close_folders(path)
        hint = f" Did you mean {' or '.join(near)}?" if near else ""
        shown = f"local folder {path}" if source == "local" else name
        raise ConfigError(f"model.name_or_path: {shown} does not exist.{hint}")
    return ResolvedModel(name, origin=f"hf:{name}")


def loadable_path(cfg: ModelConfig, resolved: ResolvedModel) -> str:
    """What ``from_pretrained`` opens: a hub id is checked first (:mod:`tifa_lite.hub`), so a
    hub that cannot be reached ends in one line, not a minute of retries and a traceback.
    Kept out of :func:`resolve_model`, which planning offline calls for any id."""
    if resolved.origin.startswith("hf:"):
        from tifa_lite.hub import local_or_reachable

        return local_or_reachable(resolved.path, cfg.revision)
    return resolved.path
