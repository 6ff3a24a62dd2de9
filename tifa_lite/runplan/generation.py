"""Whether GRPO generates with vLLM: decided in the run plan, before anything loads, so a
recipe that cannot work stops at once and the planner reserves vLLM's memory only where it
will run. The inputs (package importable, CUDA present) are injectable so the rule is
tested on machines that have neither."""

from __future__ import annotations

import importlib.util
import logging

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)


def vllm_max_model_length(grpo) -> int:
    """The context vLLM colocate is started with (``grpo`` is the recipe's section): without it vLLM
    reserves a KV cache for the model's whole context (32k for Qwen2.5). MGRPO's second pass
    generates after the first answer, so its prompt carries one completion more."""
    return grpo.max_prompt_length + grpo.passes * grpo.max_completion_length


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def select_vllm(
    mode: str, vllm_available: bool | None = None, cuda_available: bool | None = None, quant_bits: int | None = None,
) -> bool:
    """``grpo.use_vllm`` (auto | on | off) → whether TRL should generate with vLLM.

    A quantised base is refused here, in the run plan, before anything loads. 8-bit: TRL's
    colocate weight sync raises "vLLM does not support in-flight 8-bit quantization" at the
    first generation. 4-bit: TRL 1.16 starts vLLM with bitsandbytes quantisation and at each
    sync merges the adapter into the 4-bit layers (PEFT dequantises and re-quantises the
    frozen base every time) and pushes the packed ``Params4bit`` data without its quant state
    (TRL issue 4973, open), so vLLM generates from garbage weights."""
    if mode == "off":
        return False
    if quant_bits in (4, 8):
        kind = "an 8-bit (LLM.int8)" if quant_bits == 8 else "a 4-bit (QLoRA)"
        why = ("TRL cannot hand an 8-bit model to vLLM" if quant_bits == 8 else
               "TRL 1.16 syncs a 4-bit adapter model into vLLM without its quantisation state (TRL issue 4973)")
        if mode == "on":
            raise ConfigError(
                f"grpo.use_vllm=on with quant.bits={quant_bits}: {why}. Use grpo.use_vllm=auto or off (transformers "
                "generation), or quant.bits=null (LoRA on a 16-bit base) to generate with vLLM."
            )
        log.info("GRPO generation: transformers (vLLM cannot take %s base here: %s)", kind, why)
        return False
    vllm_available = vllm_importable() if vllm_available is None else vllm_available
    cuda_available = cuda_present() if cuda_available is None else cuda_available
    usable = vllm_available and cuda_available
    if mode == "on" and not usable:
        missing = "the vllm package (pip install 'tifa-lite[vllm]')" if not vllm_available else "a CUDA GPU"
        raise ConfigError(f"grpo.use_vllm=on but this machine lacks {missing}. Use grpo.use_vllm=auto or off.")
    if mode == "auto" and not usable:
        log.info("GRPO generation: transformers (vLLM %s)", "has no CUDA GPU here" if vllm_available else "not installed")
    return usable


def bitsandbytes_fused_cpu_kernel() -> bool:
    """bitsandbytes repacks 4-bit weights for a fused CPU kernel where the CPU has AVX512-BF16;
    elsewhere its CPU matmul dequantises the weight inside every call."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return False
    return bool(has_avx512bf16())


def select_dequantized_generation(
    mode: str, *, quant_bits: int | None, device: str, rehearsal: str | None = None, vllm: bool = False,
    fused_cpu_kernel: bool | None = None,
) -> bool:
    """``grpo.dequantize_for_generation`` (auto | on | off) → whether generation runs from a dense
    copy of the 4-bit base (:mod:`tifa_lite.modeling.dequantized`).

    auto turns it on only where bitsandbytes would dequantise the weight inside every decoding
    matmul anyway, so the copy saves that work without replacing a faster kernel: a CPU run
    without AVX512-BF16 (measured: benchmarks/results/grpo.md). On CUDA bitsandbytes has fused
    4-bit kernels for decode-sized batches that read a quarter of the bytes of a 16-bit copy;
    that trade was measured only on an H200 (copy 0.85-0.88x there, a small model), not on the
    T4/A10 the recipes are for, so auto leaves CUDA (and a card's CPU rehearsal) on the 4-bit
    path and ``on`` forces the copy."""
    if mode == "off" or vllm:
        return False
    if quant_bits != 4:
        if mode == "on":
            raise ConfigError(
                f"grpo.dequantize_for_generation=on needs a 4-bit base (quant.bits=4), not quant.bits={quant_bits}: "
                "there is nothing to dequantise. Use auto or off."
            )
        return False
    if mode == "on":
        return True
    if device != "cpu" or rehearsal:
        return False
    fused = bitsandbytes_fused_cpu_kernel() if fused_cpu_kernel is None else fused_cpu_kernel
    return not fused
