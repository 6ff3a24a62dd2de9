"""A hub id with no hub: answered in one line, in about a second, with "did you mean".

Left to the libraries, an id that is not cached on a machine without network (or with
``HF_HUB_OFFLINE`` set) costs close to a minute of retry warnings and ends in a
hundred-line ``OSError``; a misspelt one says nothing about the spelling. So before a
hub id is handed to ``from_pretrained`` (or to ModelScope's ``snapshot_download``) it
goes through :func:`local_or_reachable`: a cached copy is used from its folder, an
unreachable hub is found by a connection attempt bounded to a second, and the error
offers the closest names among local folders, the hub caches and the planner's table.

No torch import: ``tifa-lite plan`` uses this.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from tifa_lite.errors import ConfigError

PROBE_SECONDS = 1.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=None)
def reachable(host: str, port: int = 443) -> bool:
    """Whether a TCP connection to ``host`` opens within :data:`PROBE_SECONDS` (name lookup
    included: it runs in a thread so that a hanging resolver cannot hold the caller)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.2)
    return bool(result and result[0])


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def modelscope_cache_dirs() -> list[Path]:
    root = Path(os.environ.get("MODELSCOPE_CACHE") or Path.home() / ".cache" / "modelscope" / "hub")
    return [root / "models", root]


def _hf_cached_ids() -> list[str]:
    try:
        return [p.name[len("models--"):].replace("--", "/") for p in hf_cache_dir().glob("models--*")]
    except OSError:
        return []


def _modelscope_cached_ids() -> list[str]:
    found = []
    for root in modelscope_cache_dirs():
        for config in root.glob("*/*/config.json"):
            found.append(f"{config.parent.parent.name}/{config.parent.name}")
    return found


def _local_folders() -> list[str]:
    try:
        return [p.name for p in Path.cwd().iterdir() if (p / "config.json").is_file()]
    except OSError:
        return []


def _table_names() -> list[str]:
    from tifa_lite.planner.known_models import _ALIASES, EMBEDDED, KNOWN_CONFIGS

    return [*KNOWN_CONFIGS, *_ALIASES, *EMBEDDED]


def close_matches(name: str, extra: list[str] | None = None) -> list[str]:
    """Up to three names from local folders, the hub caches and the planner's table that
    are spelt like ``name`` (case does not count)."""
    candidates = list(dict.fromkeys([*_local_folders(), *_hf_cached_ids(), *_modelscope_cached_ids(),
                                     *_table_names(), *(extra or [])]))
    folded = {c.lower(): c for c in candidates if c.lower() != name.lower()}
    hits = difflib.get_close_matches(name.lower(), folded, n=3, cutoff=0.6)
    if not hits:  # the repo part alone: qwen2.5-7b-instruct vs Qwen/Qwen2.5-7B-Instruct
        tails = {c.split("/")[-1]: c for c in folded}
        hits = [tails[t] for t in difflib.get_close_matches(name.lower().split("/")[-1], tails, n=3, cutoff=0.75)]
    return [folded[h] for h in hits]


def close_folders(path: Path) -> list[str]:
    """Model folders beside a local ``path`` that does not exist, spelt like it."""
    parent = path.expanduser().parent
    try:
        names = [p.name for p in parent.iterdir() if p.is_dir()]
    except OSError:
        return []
    return [str(parent / n) for n in difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)]


def unreachable_error(key: str, name: str, hub: str, why: str) -> ConfigError:
    matches = close_matches(name)
    hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else (
        " Give a local model folder, or download it where there is network (it is then used from the cache)."
    )
    return ConfigError(f"{key}={name}: not a local folder, not in the {hub} cache, and the {hub} is unreachable "
                       f"({why}).{hint}")


def _hf_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def hf_status() -> str | None:
    """Why the Hugging Face Hub cannot be used now (None: it can)."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    host = _hf_host()
    return None if reachable(host) else f"no connection to {host}"


def local_or_reachable(name: str, revision: str | None = None, key: str = "model.name_or_path") -> str:
    """What ``from_pretrained`` should open for the hub id ``name``: the id itself while the
    hub answers or ``HF_HUB_OFFLINE`` makes the libraries read their cache; the cached snapshot
    folder when the hub cannot be reached unannounced (the libraries would retry for a
    minute); a one-line ConfigError when it is not cached."""
    why = hf_status()
    if why is None:
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(name, revision=revision, local_files_only=True, cache_dir=hf_cache_dir())
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        raise unreachable_error(key, name, "Hugging Face Hub", why) from None
    return name if offline() else folder


def modelscope_local_or_reachable(name: str, key: str = "model.name_or_path") -> Path | None:
    """A cached ModelScope copy of ``name`` when ModelScope cannot be reached (or the hub is
    set offline), None while it answers; raises a one-line ConfigError when neither."""
    why = "HF_HUB_OFFLINE is set" if offline() else (None if reachable("www.modelscope.cn") else
                                                     "no connection to www.modelscope.cn")
    if why is None:
        return None
    for root in modelscope_cache_dirs():
        for folder in (root / name, root / name.replace(".", "___")):  # newer ModelScope escapes dots
            if (folder / "config.json").is_file():
                return folder
    raise unreachable_error(key, name, "ModelScope hub", why)


def check_model_source(model_cfg) -> None:
    """The recipe's ``model:`` hub id, checked before torch is even imported (a run's first
    seconds): a local folder, a GGUF file or an embedded name is left to
    :func:`tifa_lite.modeling.resolve.resolve_model`."""
    from tifa_lite.planner.known_models import EMBEDDED

    name, source = model_cfg.name_or_path, model_cfg.source
    if source == "modelscope":
        modelscope_local_or_reachable(name)
        return
    if source not in ("auto", "hf") or name.lower() in EMBEDDED or model_cfg.gguf_file:
        return
    if name.startswith((".", "/", "~")) or name.endswith(".gguf") or Path(name).expanduser().exists():
        return
    local_or_reachable(name, model_cfg.revision)


def refused_by_hub(name: str, exc: OSError, key: str = "model.name_or_path") -> ConfigError | None:
    """A library error for a hub id that the hub answered (no such repo, gated, no such
    revision), as one line with "did you mean"; None for anything else (a disk error keeps its
    errno and is not this)."""
    if exc.errno is not None:
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    matches = close_matches(name)
    hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
    return ConfigError(f"{key}={name}: not a local folder, and the Hugging Face Hub refused it ({first[:200]}).{hint}")
