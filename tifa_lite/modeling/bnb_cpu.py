"""bitsandbytes' AVX512-BF16 CPU inference kernel: kept out of the way of narrow 4-bit layers,
and out of a reference that must compute what training computed.

On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight for its fast kernel at
the first eval-mode, no-grad forward (``_convert_weight_packed_for_cpu``) and asserts that the
layer's output width is a multiple of its block (32), and reshapes the scales per quantisation
block of the input (64 columns). Narrow projections fail that assert
mid-run: Qwen3.5/Qwen3-Next's linear-attention gates have one output per value head (16 in
Qwen3.5-0.8B), so chat, serve, eval and the merge self-check of those models crash on such a
CPU. Those layers keep bitsandbytes' plain CPU path (dequantise + matmul), which has no shape
limit and computes the same NF4 weights.

The same kernel runs only in eval mode without gradients, and sums differently from the
dequantise-and-matmul path that training takes (a tiny model's greedy replies already differ):
a reference for "what was trained" (the merge's self-check) keeps the training path everywhere.
"""

from __future__ import annotations

import inspect


def packing_block() -> int | None:
    """The output-width multiple bitsandbytes' CPU repacking needs (None: no such repacking)."""
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu
    except ImportError:
        return None
    block = inspect.signature(_convert_weight_packed_for_cpu).parameters.get("block_n")
    return block.default if block is not None and isinstance(block.default, int) else None


def _quant_block(layer) -> int:
    # the repacking reshapes absmax to (out, in // blocksize): an input narrower than a block has none
    state = getattr(layer.weight, "quant_state", None)
    return getattr(state, "blocksize", None) or 64


def keep_narrow_layers_unpacked(model) -> int:
    """Turn the CPU repacking off for 4-bit layers it cannot take; returns how many."""
    from tifa_lite.modeling.dequantized import linear4bit_layers

    block = packing_block()
    if block is None:
        return 0
    narrow = [layer for layer in linear4bit_layers(model)
              if getattr(layer, "support_avx512bf16_for_cpu", False)
              and (layer.out_features % block or layer.in_features % _quant_block(layer))]
    for layer in narrow:
        layer.support_avx512bf16_for_cpu = False
    return len(narrow)


def training_arithmetic(model) -> int:
    """Every 4-bit layer computes as in training (dequantise + matmul), in eval mode too."""
    from tifa_lite.modeling.dequantized import linear4bit_layers

    layers = [layer for layer in linear4bit_layers(model) if getattr(layer, "support_avx512bf16_for_cpu", False)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
