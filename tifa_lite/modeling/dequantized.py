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
are bit-identical; the switch is ``grpo.dequantize_for_generation``.
"""

from __future__ import annotations

import contextlib
import functools

import torch


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


def dequantize_for_generation(model) -> None:
    """Wrap ``model.generate`` so each call runs inside :func:`dequantized_base`."""
    if getattr(model.generate, "_tifa_dequantized", False) or not linear4bit_layers(model):
        return
    plain_generate = model.generate

    @functools.wraps(plain_generate)
    def generate(*args, **kwargs):
        with dequantized_base(model):
            return plain_generate(*args, **kwargs)

    generate._tifa_dequantized = True
    model.generate = generate
