"""How closely one model follows another on the same token ids: per-token KL of the
next-token distributions, top-1 agreement, and where free-running greedy decodes first
part. Shared by the merge self-check, the base-weights measurement and the export
parity report, so every step of the chain is scored the same way."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def logit_agreement(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> dict[str, Any]:
    """KL(reference ‖ candidate) per token (nats) and top-1 agreement over every position
    of every prompt. Each tensor: ``[1, seq, vocab]`` or ``[seq, vocab]`` logits; the
    candidate may have a longer vocabulary (padding rows), which is cut to the reference's."""
    kls, agree, total = [], 0, 0
    for ref, got in zip(reference, candidate, strict=True):
        ref = ref.reshape(-1, ref.shape[-1]).float()
        got = got.reshape(-1, got.shape[-1]).float()[:, : ref.shape[-1]]
        if ref.shape != got.shape:
            raise ValueError(f"logits of different shapes: {tuple(ref.shape)} vs {tuple(got.shape)}")
        log_p = torch.log_softmax(ref, dim=-1)
        log_q = torch.log_softmax(got, dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        kls.append(kl)
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += ref.shape[0]
    kl_all = torch.cat(kls) if kls else torch.zeros(0)
    finite = bool(torch.isfinite(kl_all).all())
    return {
        "positions": total,
        "mean_kl": float(kl_all.mean()) if finite and total else float("inf"),
        "max_kl": float(kl_all.max()) if finite and total else float("inf"),
        "top1_agreement": agree / total if total else 0.0,
    }


def first_divergence(reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Per prompt, the index of the first generated token that differs (None: identical)."""
    at: list[int | None] = []
    for ref, got in zip(reference, candidate, strict=True):
        n = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), None)
        if n is None and len(ref) != len(got):
            n = min(len(ref), len(got))
        at.append(n)
    diverged = [n for n in at if n is not None]
    return {
        "per_prompt": at,
        "identical": sum(n is None for n in at),
        "prompts": len(at),
        "earliest": min(diverged) if diverged else None,
    }
