"""Generation from a 4-bit base whose weights are dequantised once per ``generate`` call.

Where bitsandbytes has no fused 4-bit kernel for a matmul (every 4-bit matmul on a CPU
without AVX512-BF16; on CUDA the shapes its dispatch heuristic sends to dequantise+linear),
it dequantises the whole NF4 weight inside that call: decoding 128 tokens dequantises every
layer 128 times. The base is frozen, so one dense copy made before ``generate`` serves every
token, and is freed when ``generate`` returns; training forwards keep the 4-bit weights.
The copy costs 2 (16-bit compute) or 4 (fp32) bytes per quantised weight while generating,
which the memory planner counts (:mod:`tifa_lite.planner.memory`, "dequantised base").

Written here because neither bitsandbytes, PEFT nor transformers keeps a dequantised copy
across a generate call. The dense matmul is the one bitsandbytes' own fallback runs
(``dequantize_4bit`` into the compute dtype, then ``F.linear``), so on that path the logits
are bit-identical; the switch is ``grpo.dequantize_for_generation``. Where another kernel
runs the 4-bit matmul, the first ``generate`` of a run compares the two paths' next-token
log-probabilities once and switches the copy off if they differ beyond the dtype's rounding
(:mod:`tifa_lite.modeling.lever_check`).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from tifa_lite.modeling.lever_check import LeverProbe, compute_dtype


def linear4bit_layers(model) -> list:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # no bitsandbytes, so no 4-bit layers
        return []
    return [module for module in model.modules() if isinstance(module, Linear4bit)]


def dequantized_weight(layer, dtype: torch.dtype) -> torch.Tensor:
    """The layer's weight as bitsandbytes' fallback matmul dequantises it (gemm_4bit's
    default kernel): nested absmax first, then the 4-bit codes straight into ``dtype``."""
    from bitsandbytes.functional import dequantize_blockwise

    state = layer.weight.quant_state
    absmax = state.absmax
    if state.nested:
        absmax = dequantize_blockwise(state.absmax, state.state2) + state.offset
    return torch.ops.bitsandbytes.dequantize_4bit.default(
        layer.weight.data.view(-1, 1), absmax.float(), state.blocksize, state.quant_type, state.shape, dtype)


def _dense_forward(layer, cache: dict, x: torch.Tensor) -> torch.Tensor:
    # Linear4bit.forward's dtype handling, with the matmul on the cached dense weight.
    if not layer.compute_type_is_set:
        layer.set_compute_type(x)
        layer.compute_type_is_set = True
    input_dtype = x.dtype
    if layer.compute_dtype is not None:
        x = x.to(layer.compute_dtype)
    if "weight" not in cache:
        cache["weight"] = dequantized_weight(layer, x.dtype)
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return torch.nn.functional.linear(x, cache["weight"], bias).to(input_dtype)


@contextlib.contextmanager
def dequantized_base(model):
    """Inside the block every bitsandbytes 4-bit linear layer of ``model`` computes with a
    dense copy of its weight, made on its first call; on exit the copies are dropped."""
    layers = linear4bit_layers(model)
    for layer in layers:
        # an instance attribute shadows the class's forward; deleting it restores the 4-bit path
        layer.forward = functools.partial(_dense_forward, layer, {})
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def dequantize_for_generation(model, training_args=None) -> LeverProbe | None:
    """Wrap ``model.generate`` so each call runs inside :func:`dequantized_base`, once its
    first call has shown the copy computes what the 4-bit layers compute."""
    existing = getattr(model.generate, "_tifa_dequantized", None)
    if existing is not None or not linear4bit_layers(model):
        return existing
    plain_generate = model.generate
    probe = LeverProbe("grpo.dequantize_for_generation")

    @functools.wraps(plain_generate)
    def generate(*args, **kwargs):
        if not probe.checked and kwargs.get("input_ids") is not None:
            check_dequantized(model, probe, kwargs["input_ids"], kwargs.get("attention_mask"),
                              compute_dtype(model, training_args))
        if probe.off_reason:
            return plain_generate(*args, **kwargs)
        with dequantized_base(model):
            return plain_generate(*args, **kwargs)

    generate._tifa_dequantized = probe
    model.generate = generate
    return probe


def check_dequantized(model, probe: LeverProbe, input_ids: torch.Tensor, attention_mask, dtype: torch.dtype) -> None:
    """The first row's next-token log-probabilities through the 4-bit layers and through the copy."""
    from tifa_lite.modeling.lever_check import difference

    probe.checked = True
    inputs = {"input_ids": input_ids[:1], "logits_to_keep": 1, "use_cache": False}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask[:1]
    try:
        with torch.no_grad():
            quantized = model(**inputs).logits[:, -1].float()
            with dequantized_base(model):
                dense = model(**inputs).logits[:, -1].float()
    except Exception as error:
        probe.switch_off(model, f"the dequantised forward failed: {type(error).__name__}: {str(error)[:200]}")
        return
    gap = difference(torch.log_softmax(dense, -1), torch.log_softmax(quantized, -1), dtype)
    if gap:
        probe.switch_off(model, f"log-probs through the dequantised copy differ from the 4-bit layers': {gap}")
