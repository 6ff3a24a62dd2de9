"""Disk a write needs, from the model's shape (config.json only, like the rest of the planner):
a training run's checkpoints and final weights, a merged model, a GGUF file. Estimates, not
bounds: tokenizer files and JSON beside the weights are a fixed allowance."""

from __future__ import annotations

from tifa_lite.planner.memory import DTYPE_BYTES, lora_params, optimizer_state_bytes_per_param
from tifa_lite.planner.shapes import ModelShape

# Tokenizer, configs, trainer state, a loss curve: a few MB beside any model.
SIDE_FILES = 8 * 2**20
# Bytes per parameter of llama.cpp's types (block scales included).
GGUF_BYTES = {"f16": 2.0, "bf16": 2.0, "q8_0": 1.0625, "q6_k": 0.82, "q5_k_m": 0.69, "q4_k_m": 0.61}


def training_bytes(config, shape: ModelShape | None = None) -> int:
    """Checkpoints held at once (weights + optimizer state) and the final weights."""
    from tifa_lite.planner.fit import plan_input

    inp = plan_input(config, None, shape)
    t = config.train
    if config.lora.enabled:
        params = lora_params(inp.shape, inp.lora_r, inp.lora_targets)
        weight_bytes = DTYPE_BYTES.get(inp.lora_dtype or "fp32", 4)
    else:
        params = inp.shape.total_params
        weight_bytes = DTYPE_BYTES.get(inp.param_dtype or inp.precision, 4)
    checkpoint = params * (weight_bytes + optimizer_state_bytes_per_param(inp.optimizer, weight_bytes)) + SIDE_FILES
    saves = t.max_steps // t.save_steps if t.max_steps > 0 else None
    # transformers writes the new checkpoint before it deletes the oldest beyond the limit;
    # at least one: a SIGTERM saves one whatever the schedule.
    limits = [n for n in (saves, t.save_total_limit + 1 if t.save_total_limit else None) if n is not None]
    held = max(min(limits), 1) if limits else 1
    return int(checkpoint * held + params * weight_bytes + SIDE_FILES)


def merged_bytes(shape: ModelShape, dtype: str) -> int:
    return int(shape.total_params * DTYPE_BYTES.get(dtype, 4) + SIDE_FILES)


def gguf_bytes(shape: ModelShape, outtype: str, converter: str = "llama.cpp") -> int:
    """The file, and for llama.cpp's K-quants the f16 intermediate that exists beside it."""
    size = shape.total_params * GGUF_BYTES.get(outtype, 2.0)
    if converter == "llama.cpp" and outtype not in ("f16", "bf16", "q8_0"):
        size += shape.total_params * 2
    return int(size)
