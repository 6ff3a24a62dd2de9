"""What ``model.layer_loop`` changes in a plan: the looped span is computed ``repeats`` times,
so activations, the KV cache and the decoder's compute grow by the extra layers; the 4-bit base
weights are shared by the passes and do not (a merged looped model does store them: plan it by
its own, deeper config). A per-pass LoRA also multiplies the span's adapter."""

from __future__ import annotations


def extra_layers(loop) -> int:
    """Decoder layers computed beyond the model's own (0 without a loop)."""
    return 0 if loop is None else (loop.end - loop.start) * (loop.repeats - 1)


def compute_factor(layers: int, loop) -> float:
    """Decoder compute per token relative to the unlooped model (embeddings and head excluded)."""
    return (layers + extra_layers(loop)) / layers
