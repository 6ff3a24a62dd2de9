"""Paper estimate for full-parameter SFT of Qwen2.5-7B on 2 nodes x 8 H100 with ZeRO-3:
parameters, FLOPs per token, memory per GPU, tokens/s at a stated MFU and interconnect
traffic per step. docs/scale.md walks through the same arithmetic; this script is the
source of its numbers so a changed assumption is one edit, not a hunt through prose.

    python benchmarks/scale_estimate.py [--seq 4096] [--micro 4] [--global-batch 128] [--mfu 0.35]

No measurement is involved: these are predictions to check a real run against.
"""

from __future__ import annotations

import argparse

# Qwen2.5-7B config.json (Qwen2ForCausalLM): q/k/v projections have biases, embeddings are untied.
QWEN25_7B = dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False)
H100_SXM_BF16_DENSE = 989.4e12  # FLOP/s, no sparsity
GB = 1e9


def parameter_count(c: dict) -> dict[str, int]:
    h, kv = c["hidden"], c["hidden"] // c["heads"] * c["kv_heads"]
    attn = h * h + 2 * h * kv + h * h + (h + 2 * kv)  # q, k, v, o weights + q/k/v biases
    mlp = 3 * h * c["intermediate"]                   # gate, up, down (SwiGLU)
    layer = attn + mlp + 2 * h                        # + two RMSNorm weights
    embed = c["vocab"] * h
    head = 0 if c["tied"] else c["vocab"] * h
    return dict(layer=layer, layers=layer * c["layers"], embed=embed, head=head,
                total=layer * c["layers"] + embed + head + h)


def flops_per_token(c: dict, seq: int) -> dict[str, float]:
    p = parameter_count(c)
    matmul_params = p["layers"] + (p["head"] or p["embed"])  # the embedding lookup is not a matmul
    dense = 6 * matmul_params                                # forward 2N + backward 4N
    # PaLM's MFU convention: 12 * layers * hidden * seq per token for QK^T and AV (fwd+bwd),
    # counted without the causal half-saving, so MFU numbers are comparable across papers.
    attention = 12 * c["layers"] * c["hidden"] * seq
    recompute = 2 * matmul_params + attention / 3             # activation checkpointing re-runs the forward
    return dict(dense=dense, attention=attention, model=dense + attention, hardware=dense + attention + recompute)


def memory_per_gpu(c: dict, seq: int, micro: int, world: int) -> dict[str, float]:
    psi = parameter_count(c)["total"]
    h, inter, layers, vocab = c["hidden"], c["intermediate"], c["layers"], c["vocab"]
    kv = h // c["heads"] * c["kv_heads"]
    states = 16 * psi / world  # bf16 params 2 + bf16 grads 2 + fp32 master 4 + Adam m 4 + v 4, sharded
    # Largest module DeepSpeed gathers at once is the 152064 x 3584 embedding / lm_head (bf16).
    gathered = 2 * vocab * h + 2 * parameter_count(c)["layer"]
    checkpoints = 2 * seq * h * layers * micro  # one bf16 hidden state per layer boundary
    # One layer live during recompute + backward (FlashAttention: no s x s scores kept):
    # attention ≈ 4 hidden-sized tensors + q/k/v, SwiGLU ≈ 2 hidden + 4 intermediate-sized tensors.
    layer_live = 2 * seq * micro * (4 * h + (h + 2 * kv) + 2 * h + 4 * inter) * 2  # x2: activations + their grads
    # Logits upcast to fp32 for the loss, plus their gradient.
    logits = 2 * 4 * seq * vocab * micro
    return dict(states=states, gathered=gathered, checkpoints=checkpoints, layer_live=layer_live,
                logits=logits, total=states + gathered + checkpoints + layer_live + logits)


def traffic(c: dict, world: int, per_node: int, micro_steps: int) -> dict[str, float]:
    psi = parameter_count(c)["total"]
    full16 = 2 * psi  # one bf16 copy of the model
    ring = (world - 1) / world
    # ZeRO-3, per micro-step: all-gather params for forward, again for backward (the recompute
    # forward reuses them: stage3_max_reuse_distance), reduce-scatter the bf16 gradients.
    per_gpu_micro = 3 * full16 * ring
    # Across the node boundary each collective moves the other node's shards once per direction.
    nodes = world // per_node
    inter_node_micro = 3 * full16 * (nodes - 1) / nodes
    return dict(full16=full16, per_gpu_micro=per_gpu_micro, per_gpu_step=per_gpu_micro * micro_steps,
                inter_node_micro=inter_node_micro, inter_node_step=inter_node_micro * micro_steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--mfu", type=float, default=0.35)
    ap.add_argument("--node-link-gbps", type=float, default=3200, help="per node, per direction (8 x 400G IB)")
    a = ap.parse_args()
    c, world = QWEN25_7B, a.nodes * a.gpus_per_node
    accum = a.global_batch // (a.micro * world)
    assert a.micro * accum * world == a.global_batch, "global batch must be micro x accum x world"

    p = parameter_count(c)
    f = flops_per_token(c, a.seq)
    m = memory_per_gpu(c, a.seq, a.micro, world)
    t = traffic(c, world, a.gpus_per_node, accum)
    tokens_step = a.global_batch * a.seq
    tok_s_gpu = a.mfu * H100_SXM_BF16_DENSE / f["model"]
    step_s = tokens_step / (tok_s_gpu * world)
    micro_compute_s = a.micro * a.seq / tok_s_gpu
    link = a.node_link_gbps / 8 * GB  # bytes/s

    print(f"parameters: layer {p['layer']:,}  x{c['layers']} = {p['layers']:,}; embed {p['embed']:,}; "
          f"lm_head {p['head']:,}; total {p['total']:,} ({p['total'] / 1e9:.2f} B)")
    print(f"FLOPs/token: 6N {f['dense'] / 1e9:.1f} G + attention {f['attention'] / 1e9:.2f} G = "
          f"{f['model'] / 1e9:.1f} G (model); with recompute {f['hardware'] / 1e9:.1f} G (hardware)")
    print(f"batch: {a.global_batch} seq x {a.seq} tok = {tokens_step:,} tokens/step; micro {a.micro} x accum "
          f"{accum} x world {world}")
    print("memory/GPU (GB): " + ", ".join(f"{k} {v / GB:.2f}" for k, v in m.items()))
    print(f"throughput @ MFU {a.mfu:.0%}: {tok_s_gpu:,.0f} tok/s/GPU, {tok_s_gpu * world:,.0f} tok/s total, "
          f"step {step_s:.2f} s, micro-step compute {micro_compute_s:.2f} s; HFU "
          f"{a.mfu * f['hardware'] / f['model']:.0%}")
    print(f"ZeRO-3 traffic: bf16 model {t['full16'] / GB:.2f} GB; per GPU {t['per_gpu_micro'] / GB:.1f} GB/micro-step, "
          f"{t['per_gpu_step'] / GB:.1f} GB/step; across nodes {t['inter_node_micro'] / GB:.1f} GB/micro-step each way "
          f"= {t['inter_node_micro'] / link * 1e3:.0f} ms at {a.node_link_gbps:.0f} Gb/s, "
          f"{t['inter_node_micro'] / (100 / 8 * GB):.2f} s at 100 Gb/s")
    for mfu in (0.25, 0.35, 0.45):
        rate = mfu * H100_SXM_BF16_DENSE / f["model"]
        print(f"  MFU {mfu:.0%}: {rate:,.0f} tok/s/GPU  {rate * world:,.0f} tok/s  step {tokens_step / (rate * world):.2f} s")


if __name__ == "__main__":
    main()
