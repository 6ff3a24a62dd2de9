"""``tifa_lite.merge(adapter, output, ...)``: adapter + its 16-bit base → a standalone
model folder, written atomically and checked against base+adapter before it appears."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from tifa_lite.atomic import check_output_path, replacing_dir
from tifa_lite import diskspace
from tifa_lite.planner.disk import merged_bytes
from tifa_lite.planner.shapes import model_shape_from_config_dict
from tifa_lite.runlock import output_lock
from tifa_lite.errors import ConfigError
from tifa_lite.hardware import torch_dtype as to_torch_dtype
from tifa_lite.merging import layer_loop, stream
from tifa_lite.merging.adapter import (
    AdapterInfo,
    BaseModelRef,
    MergeError,
    ModelLoader,
    check_compatible,
    read_adapter,
    resolve_base,
)
from tifa_lite.merging.quantized_base import choose_base_weights, nf4_round_trip, quantized_linear_names, trained_quant
from tifa_lite.merging.selfcheck import DTYPE_NAMES, self_check

log = logging.getLogger(__name__)

REPORT_FILE = "merge_report.json"


def merge(
    adapter: str | Path,
    output: str | Path,
    dtype: str = "bf16",
    base: str | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "1GB",
    check: bool = True,
    tolerance: float | None = None,
    base_weights: str = "auto",
) -> dict[str, Any]:
    """Merge a LoRA/QLoRA adapter into its base reloaded in ``dtype`` (never 4-bit);
    ``dtype="auto"``: bf16 on a GPU that has it, fp16 on a T4, fp32 on the CPU. A reward
    (sequence-classification) adapter is merged with its score head into that class.

    ``base_weights``: ``dequantized`` adds ΔW to dequant(NF4(W)), the base a QLoRA run
    trained against (:mod:`tifa_lite.merging.quantized_base`); ``original`` to the 16-bit W;
    ``auto`` (default) picks dequantized for a 4-bit run, as measured in
    benchmarks/results/export.md, and original otherwise.

    Returns the report (also written to ``<output>/merge_report.json``). Raises
    :class:`MergeError` when the self-check fails; then no output folder is left."""
    output = check_output_path(output, "--output")
    with output_lock(output, "--output"), diskspace.translating(output, key="--output"):
        return _merge(adapter, output, dtype, base, overwrite, max_shard_size, check, tolerance, base_weights)


def _merge(adapter, output: Path, dtype, base, overwrite, max_shard_size, check, tolerance, base_weights) -> dict[str, Any]:
    if output.exists() and not overwrite:
        raise ConfigError(f"--output {output} already exists. Choose another folder or pass --overwrite.")
    if layer_loop.looped(adapter) is not None:  # written out as an ordinary deeper model first
        return layer_loop.merge_looped(merge, adapter, output, base=base, dtype=dtype, overwrite=overwrite,
                                       max_shard_size=max_shard_size, check=check, tolerance=tolerance,
                                       base_weights=base_weights)
    if dtype == "auto":
        from tifa_lite.hardware import native_precision

        dtype = native_precision()
    if dtype not in DTYPE_NAMES.values():
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPE_NAMES.values())} or auto.")
    torch_dtype = to_torch_dtype(dtype)
    started = time.time()
    info = read_adapter(adapter)
    base_ref = resolve_base(info, base)
    shards = stream.base_shards(base_ref.path) if not base_ref.gguf_file else None
    check_compatible(info, base_ref, stream.base_shapes(shards) if shards else None)
    try:
        need = merged_bytes(model_shape_from_config_dict(base_ref.config), dtype)
    except (ConfigError, KeyError, TypeError, ValueError):  # an architecture the planner does not read
        need = None
    if need:
        diskspace.require(output, need, "--output")
    if not info.modules:
        raise MergeError(f"{info.path}: the adapter holds no LoRA weights; there is nothing to merge.")
    loader = ModelLoader.for_adapter(info)
    quant = trained_quant(info)
    merged_into = choose_base_weights(base_weights, quant, info)
    base_transform = _dequantized_base(quant, base_ref, loader) if merged_into == "dequantized" else None

    with replacing_dir(output, "merging") as staging:
        fallback = stream.needs_full_model(info, base_ref, shards)
        weights = None
        if fallback:
            info.notes.append(f"merged with PEFT's full-model merge_and_unload because {fallback} (peak RAM ≈ model size)")
            _full_model_merge(info, base_ref, staging, torch_dtype, max_shard_size, loader, base_transform)
        else:
            weights = stream.stream_merge(shards, info, staging, torch_dtype, _parse_size(max_shard_size), base_transform)
            _write_config(base_ref, staging, dtype)
        tokenizer = _write_tokenizer(info, base_ref, staging)
        if loader.head:
            _set_pad_token_id(staging, tokenizer)
            info.notes.append(f"sequence-classification model: the trained {loader.head} head "
                              f"({loader.num_labels} label{'s' if loader.num_labels > 1 else ''}) is kept")
        _write_generation_config(info, base_ref, staging, tokenizer)

        report: dict[str, Any] = {
            "adapter": str(info.path),
            "base": str(base_ref.path),
            "base_origin": base_ref.origin,
            "output": str(output),
            "dtype": dtype,
            "base_weights": merged_into,
            "trained_quant": quant.describe() if quant else None,
            "method": "peft-merge_and_unload" if fallback else "streamed-per-layer-peft-merge",
            "lora": {
                "r": info.peft_config.r,
                "alpha": info.peft_config.lora_alpha,
                "use_rslora": bool(info.peft_config.use_rslora),
                "use_dora": bool(info.peft_config.use_dora),
                "modules": len(info.modules),
            },
            "notes": info.notes,
        }
        if weights is not None:
            report["weights"] = weights
        if check:
            report["self_check"] = self_check(
                staging, base_ref.path, info.path, tokenizer, torch_dtype,
                _param_bytes_fp32(staging), base_ref.gguf_file, tolerance, loader=loader,
                trained=quant, merged_into=merged_into, base_transform=base_transform,
            )
        report["no_op"] = _is_no_op(report)
        if report["no_op"]:
            report["warning"] = (
                "NO-OP MERGE: the merged weights equal the base"
                + (" (the adapter's lora_B is all zeros: it was never trained)" if _untrained(info) else
                   f" rounded to {dtype} (the adapter's deltas are below {dtype} resolution; try --dtype fp32)")
            )
        report["seconds"] = round(time.time() - started, 1)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        if check and not report["self_check"]["passed"]:
            sc = report["self_check"]
            raise MergeError(
                f"merge self-check failed: merged model vs {sc['reference']} max logit difference "
                f"{sc['max_logit_diff_vs_reference']:.4g} > tolerance {sc['tolerance']:g}. "
                "Nothing was written. The adapter may be corrupted (values that overflow "
                f"{dtype}: try --dtype fp32) or not match this base."
            )
    return report


def _parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    s = size.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * factor)
    return int(s)


def _param_bytes_fp32(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for shard in stream.base_shards(folder) or []:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += 4 * n
    return total


def _dequantized_base(quant, base: BaseModelRef, loader: ModelLoader) -> stream.BaseTransform:
    """W → dequant(NF4(W)) for the Linears the run held in 4-bit; other tensors unchanged."""
    names = quantized_linear_names(base.config, loader.auto_class)

    def transform(key: str, tensor: torch.Tensor) -> torch.Tensor:
        return nf4_round_trip(tensor, quant) if key in names else tensor

    return transform


def _full_model_merge(
    info: AdapterInfo, base: BaseModelRef, out: Path, dtype: torch.dtype, max_shard_size, loader: ModelLoader,
    base_transform: stream.BaseTransform | None = None,
) -> None:
    from peft import PeftModel

    kwargs: dict[str, Any] = {"dtype": torch.float32, **loader.kwargs}
    if base.gguf_file:
        kwargs["gguf_file"] = base.gguf_file
    model = loader.auto_class.from_pretrained(str(base.path), **kwargs)
    if base_transform is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.data = base_transform(name, param.data)
    peft_model = PeftModel.from_pretrained(model, str(info.path))
    try:
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as exc:
        raise MergeError(f"{info.path}: {exc}") from None
    merged = merged.to(dtype)
    merged.config.tifa_lite_base = base.origin
    merged.save_pretrained(str(out), max_shard_size=max_shard_size)


def _set_pad_token_id(out: Path, tokenizer) -> None:
    """A sequence classifier pools at the last non-pad token: without pad_token_id it refuses batches."""
    config_file = out / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("pad_token_id") is None and tokenizer.pad_token_id is not None:
        config["pad_token_id"] = tokenizer.pad_token_id
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _write_config(base: BaseModelRef, out: Path, dtype: str) -> None:
    config = dict(base.config)
    config.pop("quantization_config", None)  # the merged weights are plain 16/32-bit
    config["dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    config.pop("torch_dtype", None)
    config["use_cache"] = True
    config["tifa_lite_base"] = base.origin
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _write_tokenizer(info: AdapterInfo, base: BaseModelRef, out: Path):
    """The adapter folder's tokenizer carries the training chat template (with its
    <think> policy); without one, the base's with the recipe's template applied."""
    from transformers import AutoTokenizer

    if (info.path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(info.path))
    else:
        if not base.gguf_file and not any((base.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise MergeError(f"neither the adapter {info.path} nor the base {base.path} has a tokenizer to ship with the model.")
        kwargs = {"gguf_file": base.gguf_file} if base.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(str(base.path), **kwargs)
        if info.recipe_model is not None:
            from tifa_lite.conversation.templates import apply_chat_template_choice

            apply_chat_template_choice(tokenizer, info.recipe_model)
        info.notes.append("tokenizer taken from the base (the adapter folder has none)")
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _write_generation_config(info: AdapterInfo, base: BaseModelRef, out: Path, tokenizer) -> None:
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(str(base.path))
    except OSError:
        gen = GenerationConfig()
    if info.sampling:
        from tifa_lite.conversation.session import generation_kwargs

        settings = generation_kwargs(dict(info.sampling))  # greedy (temperature 0) keeps no sampling-only key
        if not settings["do_sample"]:
            # transformers refuses to save a greedy config that still carries the base's sampling values.
            gen.temperature = gen.top_p = gen.top_k = None
        for key, value in settings.items():
            setattr(gen, key, value)
    else:
        info.notes.append("no recipe sampling found beside the adapter: generation_config.json is the base's")
    if tokenizer.eos_token_id is not None:
        gen.eos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(str(out))


def _untrained(info: AdapterInfo) -> bool:
    return all(not bool(parts["lora_B"].any()) for parts in info.modules.values())


def _is_no_op(report: dict[str, Any]) -> bool:
    weights = report.get("weights")
    if weights is not None:
        return weights["changed_tensors"] == 0
    check = report.get("self_check")
    return check is not None and check["max_logit_diff_merged_vs_base"] == 0.0
