"""Peak memory of one training step, term by term, from the model's shape and the settings.

Pure arithmetic (no torch). Every term is derived from what the libraries we compose
actually allocate (transformers' Llama/Qwen2 decoder layer, PEFT LoRA layers,
bitsandbytes NF4 storage, TRL's chunked LM head, torch AdamW) and says so in a comment.
The measured constants are the runtime baselines (``RUNTIME_GIB``: CUDA context, the CPU
process's import footprint) and the CPU cost of TRL's torch-fallback LM head
(``TRL_CPU_*``); benchmarks/results/planner.md records how each was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from tifa_lite.planner.shapes import ModelShape

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# What the process holds before the first weight: the CUDA context + cuBLAS/cuDNN workspaces
# (~0.4-0.6 GiB on recent drivers, outside torch's allocator, so torch.cuda.max_memory_allocated
# does not show it), or on the CPU the RSS of a Python process that has imported torch,
# transformers, trl and peft (0.44 GiB measured with torch 2.13 CPU, transformers 5.23, trl 1.16).
RUNTIME_GIB = {"cuda": 0.5, "cpu": 0.44}

# TRL >= 1.x scores tokens through a chunked LM head (trl.kernels.chunked_logprob): tiles of
# TOKEN_CHUNK_SIZE tokens x chunk_size vocabulary entries, never the whole logits tensor.
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
# Without Triton (the CPU), the tiles are folded by torch ops whose temporaries (y, z, log_p, p,
# grad, is_target and its float copy, the difference, the product; see _backward_tile) add up to
# ~33 bytes per tile element, plus ~0.25 GiB that does not depend on tokens, vocabulary or width.
# Both measured on the function alone (ChunkedLogProbFunction forward + backward, N in {254, 1022,
# 2044} tokens, V in {32768, 49152, 98304}, H in {576, 2048}): benchmarks/planner_validation.py --probe-head.
TRL_CPU_TILE_BYTES = 33
TRL_CPU_FIXED_GIB = 0.25

Logits = Literal["full", "chunked8", "trl_chunked", "liger"]
Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd"]


@dataclass(frozen=True)
class PlanInput:
    shape: ModelShape
    device: Literal["cuda", "cpu"] = "cuda"
    precision: str = "bf16"  # compute / activation dtype
    param_dtype: str | None = None  # dtype the unquantised weights are loaded in; None = precision
    quant_bits: int | None = 4
    double_quant: bool = True
    lora: bool = True
    lora_r: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ALL_LINEAR  # this default means every linear layer, fused ones included
    lora_dtype: str | None = None  # None: bf16 on a quantised base (TRL casts it), else fp32 (PEFT upcasts)
    norm_dtype: str | None = None  # the norms' weights when they differ (fp32 under fp16: stream_bytes)
    norm_output_16bit: bool = False  # the norms cast their output back to the compute dtype
    # PEFT casts an adapter's input to the adapter's dtype unless torch.is_autocast_enabled(), which asks
    # about CUDA only: None = only off CUDA autocast (so on the CPU, the cards' rehearsal included).
    peft_casts_inputs: bool | None = None
    batch: int = 1  # rows per micro-batch (GRPO: completions per device)
    seq_len: int = 1024  # tokens per row
    gradient_checkpointing: bool = False
    optimizer: Optimizer = "adamw"
    optimizer_in_backward: bool = False
    logits: Logits = "trl_chunked"
    attn_implementation: str = "sdpa"
    zero_stage: int | None = None
    world_size: int = 1
    method: str = "sft"
    num_generations: int = 8
    generation_batch: int | None = None  # rows generated at once; None = batch
    max_prompt_length: int = 256
    max_completion_length: int = 200
    use_vllm: bool = False
    vllm_gpu_memory_utilization: float = 0.2
    # grpo.prefill_once / grpo.pack_groups (tifa_lite.methods.grpo_groups): a group's prompt is prefilled,
    # and run through the loss forward, once per unique prompt.
    prefill_once: bool = False
    pack_groups: bool = False
    # grpo.dequantize_for_generation (tifa_lite.modeling.dequantized): a dense copy of the 4-bit linear
    # weights in the compute dtype, held while generating.
    dequantized_generation: bool = False
    gpu_memory_gib: float | None = None
    # model.layer_loop (tifa_lite.planner.layer_loop): layers computed beyond the model's own, with
    # the base weights shared; a LoRA per pass adds the span's adapter once per extra pass.
    loop_extra_layers: int = 0
    loop_lora_per_pass: bool = True


@dataclass
class Plan:
    inp: PlanInput
    static: dict[str, float] = field(default_factory=dict)  # GiB held through the whole step
    train_phase: dict[str, float] = field(default_factory=dict)  # forward/backward transients
    generation_phase: dict[str, float] = field(default_factory=dict)  # GRPO rollouts (before the train step)
    notes: dict[str, str] = field(default_factory=dict)
    # What fails whatever the peak (problems: the run cannot start), or runs slower than planned (warnings).
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    activation_bytes_per_token: float = 0.0
    activation_bytes_per_token_ckpt: float = 0.0

    @property
    def phase(self) -> str:
        return "generation" if sum(self.generation_phase.values()) > sum(self.train_phase.values()) else "train step"

    @property
    def terms(self) -> dict[str, float]:
        """The terms that make up the peak: the static ones plus the larger phase."""
        return {**self.static, **(self.generation_phase if self.phase == "generation" else self.train_phase)}

    @property
    def peak_gib(self) -> float:
        return sum(self.terms.values())

    @property
    def allocator_peak_gib(self) -> float:
        """What torch's allocator reports (torch.cuda.max_memory_allocated): no runtime baseline."""
        return self.peak_gib - self.static.get("runtime", 0.0)


def _b(n: float) -> float:
    return n / GIB


def weights_bytes(s: ModelShape, bits: int | None, param_bytes: int, double_quant: bool) -> float:
    """Frozen base weights. bitsandbytes quantises the decoder's linear layers only; embeddings,
    the LM head and norms stay in the load dtype."""
    rest = (s.embedding_params + s.head_params + s.norm_params) * param_bytes
    if bits == 4:
        # NF4: 4 bits per weight + one absmax per 64-weight block: fp32 (0.5 bit/weight), or with
        # double quantisation an 8-bit absmax plus one fp32 scale per 256 blocks (0.127 bit/weight).
        absmax_bits = (8 / 64 + 32 / (64 * 256)) if double_quant else 32 / 64
        return s.linear_params * (4 + absmax_bits) / 8 + rest
    if bits == 8:
        # LLM.int8: int8 weights + one fp32 scale per output row.
        rows = s.layers * sum(out for _, out in s.linear_shapes().values())
        return s.linear_params + rows * 4 + rest
    return s.total_params * param_bytes


def lora_targets(inp: PlanInput) -> tuple[str, ...]:
    return tuple(inp.shape.linear_shapes()) if inp.lora_targets == ALL_LINEAR else inp.lora_targets


def lora_params(s: ModelShape, r: int, targets: tuple[str, ...]) -> int:
    shapes = s.linear_shapes()
    return s.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def optimizer_state_bytes_per_param(optimizer: str, state_bytes: int) -> float:
    # torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype; bitsandbytes' 8-bit
    # AdamW keeps both in uint8 (+ tiny block scales); paged states live in CUDA unified memory
    # that is evicted to host RAM under pressure, so they do not hold GPU memory at the peak.
    return {"adamw": 2 * state_bytes, "adamw_8bit": 2, "paged_adamw_8bit": 0, "sgd": 0}[optimizer]


def stream_bytes(inp: PlanInput, act: int) -> int:
    """Bytes per element of the residual stream, the MLP's inputs and the generation KV cache.
    With fp32 norms (a T4 plan) HF's RMSNorm returns ``weight * x.to(input_dtype)`` in the weight's
    dtype, fp32, and bitsandbytes' Linear4bit casts its output back to its input's dtype, so all of
    them are fp32, in training (autocast only casts matmul inputs) and in generation alike."""
    fp32_out = inp.norm_dtype == "fp32" and not inp.norm_output_16bit and not inp.shape.norm_returns_input_dtype
    return 4 if fp32_out else act


def activation_bytes_per_token(inp: PlanInput, act: int, lora_bytes: int) -> tuple[float, float]:
    """(stored for backward per token per layer, gradient working set per token of the layer in backward).

    Autograd saves a matmul's input only when the weight needs a gradient, so a frozen base (LoRA)
    keeps far less than full fine-tuning: its inputs are kept by the adapters instead. ``act`` is
    the compute (autocast) dtype's size; the stream's is :func:`stream_bytes`. Checked term by
    term against saved_tensors_hooks on every family of the model zoo (benchmarks/planner_terms.py).
    """
    s = inp.shape
    h, q, kv, i = s.hidden, s.q_dim, s.kv_dim, s.intermediate
    stream = stream_bytes(inp, act)
    autocast = inp.precision in ("bf16", "fp16")
    frozen = inp.lora
    # LlamaRMSNorm (HF, python) upcasts to fp32 and pow() keeps that fp32 input (4h bytes), the
    # rsqrt of the variance one fp32 per token. A trained norm weight also keeps the normalised
    # tensor, and a trained matmul after it keeps the norm's output.
    norm = 4 * h + 4 + (0 if frozen else 2 * stream * h)
    norms = s.norms_per_layer * norm
    # Attention with SDPA/flash: q and k after RoPE, v (the kernel's inputs, cast to the compute
    # dtype) and the kernel's output, GQA keeping k/v at kv_dim width, plus the kernel's fp32
    # log-sum-exp per head. A trained o_proj also keeps its (transposed) input.
    attn = (2 * q + 2 * kv + (0 if frozen else q)) * act + 4 * s.heads
    if s.qk_norm:
        attn += 4 * (q + kv) + 4 * (s.heads + s.kv_heads)  # the per-head norms' fp32 inputs and rsqrt
    if inp.attn_implementation == "eager":
        attn += 2 * s.heads * inp.seq_len * act  # softmax output + the probabilities fed to matmul, per token
    # SwiGLU MLP: the gate output (SiLU's input), the SiLU output and the up output (the product's
    # inputs), in the stream's dtype (a 4-bit layer's output takes its input's); a trained down_proj
    # also keeps the product.
    mlp = (3 + (0 if frozen else 1)) * i * stream
    lora = 0.0
    if inp.lora:
        shapes = s.linear_shapes()
        # torch's fused dropout (CUDA) keeps a bool mask; the CPU path multiplies by a noise tensor of
        # the input's dtype and keeps that.
        mask = 1 if inp.device == "cuda" else lora_bytes
        casts = inp.peft_casts_inputs if inp.peft_casts_inputs is not None else not (autocast and inp.device == "cuda")
        shared_inputs: dict[str, int] = {}
        targets = lora_targets(inp)
        for t in targets:
            if t not in shapes:
                continue
            fan_in = shapes[t][0]
            # lora_A's output, kept by lora_B: in the compute dtype under autocast
            lora += inp.lora_r * (act if autocast else lora_bytes)
            if inp.lora_dropout > 0:
                lora += fan_in * mask  # each adapted module draws its own dropout
            module_input = act if t == "o_proj" else stream  # o_proj reads the attention kernel's output
            if inp.lora_dropout > 0 or module_input != act or (casts and lora_bytes != act):
                # a tensor per module that lora_A keeps: the dropout's output, autocast's 16-bit copy of an
                # fp32 stream, or PEFT's cast to the adapter's dtype (cast back to 16-bit by autocast).
                lora += fan_in * (act if autocast else lora_bytes)
            else:
                # lora_A keeps the module's input itself, which q/k/v (and gate/up) share.
                group = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gu", "up_proj": "gu"}
                shared_inputs[group.get(t, t)] = fan_in * act
        lora += sum(shared_inputs.values())
        if inp.device == "cpu":
            # glibc's heap on the CPU: each adapted module's forward frees the base output and the
            # adapter output (out_features wide) between tensors autograd keeps, and those holes
            # stay in RSS. Measured on one SmolLM2-shaped LoRA layer: RSS grows 36 KB/token beyond
            # the 40 KB autograd saves, where this term gives 41 KB (fp32, all-linear).
            lora += sum(shapes[t][1] for t in targets if t in shapes) * (act + lora_bytes)
    per_layer = norms + attn + mlp + lora
    # Backward through a layer holds the gradients of a few of its widest intermediates at once
    # (SwiGLU: of the product, the gate and up outputs) on top of what the layer stored.
    backward_work = 3 * max(i, q) * stream
    return per_layer, backward_work


def logits_bytes(inp: PlanInput, tokens: int, act: int, param_bytes: int) -> float:
    s, v = inp.shape, inp.shape.vocab
    if inp.logits == "full":
        # transformers' ForCausalLMLoss: logits in the compute dtype, an fp32 copy, log_softmax's fp32
        # output kept for backward, and in backward the fp32 gradient of the log-probs plus that of
        # the logits. (In fp32 the copy is a no-op, the logits tensor itself takes its place.)
        return tokens * v * (act + 12)
    if inp.logits == "chunked8":
        # torchtune CEWithChunkedOutputLoss: all logits chunks in the compute dtype, one 1/8 chunk
        # upcast to fp32 with its log_softmax and gradient at a time.
        return tokens * v * act + tokens * v / 8 * 12
    tile = min(tokens, TRL_TOKEN_CHUNK) * min(v, TRL_VOCAB_CHUNK)
    grad_hidden = tokens * s.hidden * 4  # accumulated in fp32 by the backward
    # On CUDA the Triton kernels fold the tile in place: only the matmul buffer exists.
    per_tile = TRL_CPU_TILE_BYTES if inp.device == "cpu" else act
    extra = TRL_CPU_FIXED_GIB * GIB if inp.device == "cpu" else 0.0
    if not inp.lora:
        # Full fine-tuning trains the LM head (tied or not): its gradient is accumulated in fp32,
        # then cast to the parameter dtype.
        extra += s.vocab * s.hidden * (4 + param_bytes)
    return tile * per_tile + grad_hidden + extra


def estimate(inp: PlanInput) -> Plan:
    s = inp.shape
    plan = Plan(inp)
    act = DTYPE_BYTES[inp.precision]
    param_bytes = DTYPE_BYTES[inp.param_dtype or inp.precision]
    quantised = inp.quant_bits is not None
    lora_bytes = DTYPE_BYTES[inp.lora_dtype] if inp.lora_dtype else (2 if quantised else max(param_bytes, 4))
    world = max(inp.world_size, 1)
    zero = inp.zero_stage or 0
    t = plan.static

    t["runtime"] = RUNTIME_GIB[inp.device]
    plan.notes["runtime"] = "CUDA context + workspaces" if inp.device == "cuda" else "python + torch/transformers/trl imports"

    base = weights_bytes(s, inp.quant_bits, param_bytes, inp.double_quant)
    if inp.method == "reward":
        base -= s.head_params * param_bytes  # AutoModelForSequenceClassification has a 1-wide score head
    if zero == 3 and not inp.lora:
        # ZeRO-3 shards the 16-bit weights; a layer is gathered (and the next prefetched) on use.
        base = base / world + 2 * s.largest_layer_params * param_bytes
    t["base weights"] = _b(base)
    plan.notes["base weights"] = {4: "NF4" + (" + double quant" if inp.double_quant else ""), 8: "int8"}.get(
        inp.quant_bits, inp.param_dtype or inp.precision
    )
    if inp.device == "cpu" and quantised:
        # transformers maps the safetensors file and the unquantised embedding stays a zero-copy view
        # on it, so the mapping lives on, with every page the quantiser read resident in RSS.
        # (The quantiser's fp32 copies are freed during loading; they show in the RSS right after
        # loading, ~0.3 GiB for SmolLM2, but training allocations reuse that heap, so no peak term.)
        t["checkpoint pages (mmap)"] = _b(s.total_params * DTYPE_BYTES[s.checkpoint_dtype])
        plan.notes["checkpoint pages (mmap)"] = "CPU: the file stays mapped"

    computed = s.layers + inp.loop_extra_layers
    if inp.lora:
        n = lora_params(s, inp.lora_r, lora_targets(inp))
        if inp.loop_lora_per_pass:
            n = n * computed // s.layers
        state = optimizer_state_bytes_per_param(inp.optimizer, lora_bytes)
        t["LoRA params + grads"] = _b(n * 2 * lora_bytes)
        t["optimizer states"] = _b(n * state)
        plan.notes["LoRA params + grads"] = f"{n / 1e6:.1f}M trainable"
    else:
        n = s.total_params
        if zero:
            # DeepSpeed mixed precision: 16-bit grads, fp32 master weights + fp32 Adam moments
            # (the ZeRO paper's 2 + 2 + 12 bytes/param), sharded by stage.
            grads = n * param_bytes / (world if zero >= 2 else 1)
            states = n * 12 / world
        else:
            grads = s.largest_layer_params * param_bytes if inp.optimizer_in_backward else n * param_bytes
            states = n * optimizer_state_bytes_per_param(inp.optimizer, param_bytes)
        t["gradients"] = _b(grads)
        t["optimizer states"] = _b(states)
        plan.notes["gradients"] = f"{n / 1e9:.2f}B trainable" + (f", ZeRO-{zero} over {world}" if zero else "")

    rows = inp.batch * (2 if inp.method in ("dpo", "orpo", "simpo") else 1)
    tokens = rows * inp.seq_len
    if inp.method == "grpo" and inp.pack_groups:
        # one packed row: each unique prompt once, each completion after a copy of the prompt's last token
        tokens = packed_tokens(inp)
        plan.train_phase["packed attention mask"] = _b(packed_mask_bytes(inp, tokens, act, computed))
        plan.notes["packed attention mask"] = f"{tokens}² (grpo.pack_groups)"
    per_layer, backward_work = activation_bytes_per_token(inp, act, lora_bytes)
    stored_ckpt = s.hidden * stream_bytes(inp, act) * computed
    # Stored for backward at the end of the forward: every layer's intermediates, or with
    # (non-reentrant) checkpointing only each decoder layer's input.
    stored = stored_ckpt if inp.gradient_checkpointing else per_layer * computed
    # In backward a checkpointed layer is re-run, so its intermediates exist again, plus the
    # gradients of its widest intermediates.
    layer_work = (per_layer if inp.gradient_checkpointing else 0) + backward_work
    plan.activation_bytes_per_token = per_layer * computed + backward_work
    plan.activation_bytes_per_token_ckpt = stored_ckpt + per_layer + backward_work
    # A reward model is a sequence classifier: one score per row, no vocabulary logits.
    logits = 0.0 if inp.method == "reward" else logits_bytes(inp, tokens, act, param_bytes)
    plan.train_phase["activations"] = _b(tokens * stored + window_mask_bytes(inp, rows, act))
    plan.notes["activations"] = (f"{tokens} tokens" + (", checkpointed" if inp.gradient_checkpointing else "")
                                 + (f", {computed} layers computed (looped)" if inp.loop_extra_layers else ""))
    plan.train_phase["logits"] = _b(logits)
    plan.notes["logits"] = {"full": "vocab x tokens, fp32 + grad", "chunked8": "chunked loss",
                            "trl_chunked": "TRL chunked LM head", "liger": "fused kernel"}[inp.logits]
    # The loss's transients are freed before backward reaches the decoder layers, so the layer
    # work only adds what it exceeds them by.
    extra = tokens * layer_work - logits
    if extra > 0:
        plan.train_phase["backward layer work"] = _b(extra)
        plan.notes["backward layer work"] = ("re-run layer + its gradients" if inp.gradient_checkpointing
                                             else "gradients of a layer") + ", beyond the logits spike"

    if inp.method in ("grpo", "rloo"):
        _grpo_terms(inp, plan, act)
    return plan


def _grpo_terms(inp: PlanInput, plan: Plan, act: int) -> None:
    s = inp.shape
    if inp.use_vllm:
        # vLLM in colocate mode pre-allocates this fraction of the card for its own copy of the
        # weights and its paged KV cache, whatever the model needs.
        gpu = inp.gpu_memory_gib or 0.0
        plan.static["vLLM reserve"] = gpu * inp.vllm_gpu_memory_utilization
        plan.notes["vLLM reserve"] = f"{inp.vllm_gpu_memory_utilization:.0%} of the card"
        _check_vllm_reserve(inp, plan, act)
        return
    # transformers generate(): a KV cache of every layer's k and v for every generated row, up to
    # prompt + completion tokens. It is freed before the training forward, so it competes with the
    # train-step transients rather than adding to them.
    rows = inp.generation_batch or inp.batch
    ctx = inp.max_prompt_length + inp.max_completion_length
    # With prefill_once the prompts' cache is computed for the unique prompts and then repeated to every
    # row, so the cache held while decoding is the same; only the prefill's work shrinks.
    kv_bytes = stream_bytes(inp, act)  # generation runs outside autocast: k/v leave their projections in the stream's dtype
    # transformers' sliding-window cache layers keep the last window - 1 tokens only
    window = min(ctx, s.sliding_window - 1) if s.sliding_window else ctx
    layer_tokens = (s.layers - s.sliding_layers + inp.loop_extra_layers) * ctx + s.sliding_layers * window
    plan.generation_phase["generation KV cache"] = _b(2 * s.kv_dim * kv_bytes * rows * layer_tokens)
    prefill_rows = unique_prompts(rows, inp.num_generations) if inp.prefill_once else rows
    # Sampling keeps last-position logits in fp32 for the processors (rows x vocab, twice), and the
    # prefill runs one layer's MLP on all prompt tokens at once.
    plan.generation_phase["generation work"] = _b(
        rows * s.vocab * 4 * 2 + prefill_rows * inp.max_prompt_length * s.intermediate * act * 3
    )
    plan.notes["generation KV cache"] = f"{rows} rows x {ctx} tokens"
    if inp.dequantized_generation and inp.quant_bits == 4:
        # A per-pass LoRA clones the looped layers (PEFT's clone_module shares the 4-bit weights), and the
        # copy is made per Linear4bit module, so each extra pass adds its span's dense copy again.
        slots = s.layers + (inp.loop_extra_layers if inp.loop_lora_per_pass else 0)
        plan.generation_phase["dequantised base"] = _b(s.linear_params * slots / s.layers * act)
        plan.notes["dequantised base"] = f"4-bit linear weights as {inp.precision} while generating" + (
            f", {slots} layers (a copy per looped pass)" if slots != s.layers else "")
    plan.notes["generation work"] = "sampling logits + prefill MLP" + (
        f" ({prefill_rows} unique prompts)" if inp.prefill_once else "")


def _check_vllm_reserve(inp: PlanInput, plan: Plan, act: int) -> None:
    """vLLM loads its own 16-bit copy of the weights inside the reserve, and refuses to start when
    the rest cannot hold the KV cache of one sequence of its max_model_len (grpo_args passes the
    prompt + completion budget, tifa_lite.runplan.generation.vllm_max_model_length); with room for
    fewer than the generation's rows it queues them (slower, not an error). vLLM's own activation
    profile comes on top, so these are lower bounds."""
    s, u = inp.shape, inp.vllm_gpu_memory_utilization
    reserve = plan.static["vLLM reserve"]
    weights = _b(s.total_params * act)
    per_seq = _b(2 * s.layers * s.kv_dim * act * inp.seq_len)
    rows = inp.generation_batch or inp.batch
    where = (f"the vLLM reserve, grpo.vllm_gpu_memory_utilization={u} x {inp.gpu_memory_gib:.1f} GiB = {reserve:.2f} GiB,")
    if reserve < weights + per_seq:
        need = math.ceil(100 * (weights + per_seq) / (inp.gpu_memory_gib or 1.0)) / 100
        plan.problems.append(
            f"{where} cannot hold vLLM's copy of the weights ({weights:.2f} GiB) plus the KV cache of one "
            f"{inp.seq_len}-token sequence ({per_seq:.2f} GiB): vLLM refuses to start. Raise "
            f"grpo.vllm_gpu_memory_utilization to at least {need:.2f}, shorten grpo.max_completion_length, "
            "or set grpo.use_vllm=off.")
    elif reserve < weights + rows * per_seq:
        plan.warnings.append(
            f"{where} holds the weights ({weights:.2f} GiB) and the KV cache of {int((reserve - weights) / per_seq)} "
            f"of the {rows} rows generated per call ({per_seq:.2f} GiB each): vLLM queues the rest, generation is slower.")


def window_mask_bytes(inp: PlanInput, rows: int, act: int) -> float:
    """Rows longer than a sliding window get a materialised tokens x tokens bool mask per row (transformers'
    sdpa_mask), which SDPA turns into an additive copy in the compute dtype in every sliding layer and
    keeps for the backward. (Packed GRPO rows carry their own mask: packed_mask_bytes.)"""
    s = inp.shape
    if (not s.sliding_window or inp.seq_len <= s.sliding_window or inp.attn_implementation == "eager"
            or (inp.method == "grpo" and inp.pack_groups)):
        return 0.0
    square = inp.seq_len * inp.seq_len
    return rows * square * (1 + act * (1 if inp.gradient_checkpointing else s.sliding_layers))


def packed_mask_bytes(inp: PlanInput, tokens: int, act: int, layers: int) -> float:
    """The packed rows' tokens x tokens mask (tifa_lite.methods.grpo_groups.attention_mask_for): a bool
    one for SDPA, which turns it into an additive mask in the compute dtype in every layer and keeps
    that copy for the backward (one layer's at a time under checkpointing: the re-run makes it again);
    eager reads an fp32 additive mask directly."""
    square = tokens * tokens
    if inp.attn_implementation == "eager":
        return square * 4
    return square * (1 + act * (1 if inp.gradient_checkpointing else layers))


def unique_prompts(rows: int, num_generations: int) -> int:
    return max(1, -(-rows // max(1, num_generations)))


def packed_tokens(inp: PlanInput) -> int:
    """Tokens of a GRPO micro-batch packed by prompt (tifa_lite.methods.grpo_groups): a micro-batch
    of whole groups holds rows / num_generations prompts (a split group packs its prompt twice)."""
    completion = inp.seq_len - inp.max_prompt_length
    return unique_prompts(inp.batch, inp.num_generations) * inp.max_prompt_length + inp.batch * (completion + 1)
