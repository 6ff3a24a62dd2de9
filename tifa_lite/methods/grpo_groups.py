"""A GRPO group shares one prompt: compute it once.

TRL hands ``num_generations`` copies of every prompt to transformers, both when it samples
the completions and when it scores them for the loss, so a role-play step (a 1–2k-token
persona card and history, 8 replies of 100–300 tokens) computes the prompt 8 times in
each. Two levers, each exact (the same arithmetic on the same positions) and each its own
recipe switch:

- ``grpo.prefill_once`` (generation): the prompt is prefilled once per unique prompt and
  its KV cache repeated to the group (``Cache.batch_select_indices``); transformers'
  ``generate`` then continues from that cache as from its own prefill.
- ``grpo.pack_groups`` (the loss forward, and the reference/old-policy forwards): each
  unique prompt and its group's completions are packed into one sequence with a 4-D
  attention mask: every completion sees the prompt and its own earlier tokens, nothing
  else, at the positions it has in TRL's padded row; pads are dropped (no padding waste).
  No KV cache is involved, so gradient checkpointing keeps working (transformers drops a
  cache inside checkpointed layers). The prompt's last token is repeated at the head of
  each branch, because it predicts each completion's first token. TRL shuffles the rows of
  a generation batch before splitting it into micro-batches, which scatters a group over
  several of them (with the shipped recipes' accumulation, most micro-batches would hold one
  row per prompt and nothing to share); under this lever the shuffle moves whole groups.
  When a generation serves one optimizer step (TRL's default), the step's gradient does not
  change for loss types that sum or average over the rows or tokens of the whole step (dapo,
  TRL's default; grpo; dr_grpo): only which micro-batch computes a row changes. For what works
  per micro-batch (bnpo's normaliser, a top_entropy_quantile below 1), and for which rows a
  later optimizer step gets when a generation serves several, the random partition is by
  groups instead of by rows.

Each lever is exact or off, decided twice. First from what the model's layers are
(:func:`packing_refusal`, :func:`prefill_refusal`): layers that mix positions outside
attention (linear attention, convolutions) cannot be described by a mask or repeated from a
cache; sliding windows, from ``layer_types`` or from ``config.sliding_window`` alone, are
written into the packed mask per layer kind; MoE router logits are not requested in a packed
forward (the load-balancing loss would read the 4-D mask; the loss forward that needs it
runs TRL's own path). Then by a probe on the run's first use (:class:`LeverProbe`): the lever
and the library's own computation run once on the same inputs and are compared within the
dtype's rounding; a difference or an error switches the lever off for the run with one line
that names the family and the difference.

Written here because neither TRL nor transformers shares a prompt across a group; it
plugs into TRL as one overridden method (``_get_per_token_logps_and_entropies``) and one
wrapped ``generate``, falling back to TRL's own code wherever the packing would not be
exact: multimodal inputs, MoE auxiliary losses, attention kernels that ignore a 4-D mask,
layers that are not attention, or a batch with nothing shared.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from tifa_lite.modeling.lever_check import (LeverProbe, compute_dtype, difference,
                                           sequence_mixers_outside_attention, text_config, unwrapped)

log = logging.getLogger(__name__)

# Kernels that honour a custom 4-D mask; flash-attention and the paged kernels ignore it.
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedGroups:
    """One row holding every unique prompt once and each of its completions as a branch."""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T], each token's column in TRL's padded row
    allowed: torch.Tensor  # [1, 1, T, T] bool: query may attend to key
    shift_labels: torch.Tensor  # [1, T]: the token this position predicts, -100 if none
    scored_at: torch.Tensor  # packed positions whose label is a completion token
    scored_row: torch.Tensor  # … the row of TRL's batch it belongs to
    scored_col: torch.Tensor  # … and its column among the completion tokens


def pack_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_length: int) -> PackedGroups | None:
    """Pack TRL's ``[prompt (left-padded) | completion (right-padded)]`` rows; None when no
    two rows share a prompt (packing would then only cost the mask)."""
    rows, width = input_ids.shape
    prompt_width = width - completion_length
    if prompt_width < 1 or rows < 2:
        return None
    prompt_key = torch.cat([input_ids[:, :prompt_width], attention_mask[:, :prompt_width]], dim=1)
    unique, group_of = torch.unique(prompt_key, dim=0, return_inverse=True)
    if len(unique) == rows:
        return None
    mask = attention_mask.bool().cpu()
    ids_cpu = input_ids.cpu()
    tokens: list[torch.Tensor] = []
    columns: list[torch.Tensor] = []
    segment: list[torch.Tensor] = []
    branch: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    scored_at: list[torch.Tensor] = []
    scored_row: list[torch.Tensor] = []
    scored_col: list[torch.Tensor] = []
    length = 0
    for group in range(len(unique)):
        members = (group_of.cpu() == group).nonzero().flatten()
        first = int(members[0])
        # the prompt, minus its last token, once: real tokens only, at their padded columns
        prefix_cols = mask[first, : prompt_width - 1].nonzero().flatten()
        tokens.append(ids_cpu[first, prefix_cols])
        columns.append(prefix_cols)
        segment.append(torch.full((len(prefix_cols),), group))
        branch.append(torch.full((len(prefix_cols),), -1))
        labels.append(torch.full((len(prefix_cols),), -100))
        length += len(prefix_cols)
        for row in members.tolist():
            completion_cols = prompt_width + mask[row, prompt_width:].nonzero().flatten()
            cols = torch.cat([torch.tensor([prompt_width - 1]), completion_cols])
            row_tokens = ids_cpu[row, cols]
            tokens.append(row_tokens)
            columns.append(cols)
            segment.append(torch.full((len(cols),), group))
            branch.append(torch.full((len(cols),), row))
            # position i predicts the branch's token i + 1; the last one predicts nothing scored
            labels.append(torch.cat([row_tokens[1:], torch.tensor([-100])]))
            n = len(completion_cols)
            scored_at.append(length + torch.arange(n))
            scored_row.append(torch.full((n,), row))
            scored_col.append(completion_cols - prompt_width)
            length += len(cols)
    device = input_ids.device
    seg, br = torch.cat(segment), torch.cat(branch)
    order = torch.arange(length)
    # causal within a segment; a prompt key is seen by its whole group, a branch key by its branch only
    allowed = ((seg[:, None] == seg[None, :]) & ((br[None, :] == -1) | (br[None, :] == br[:, None]))
               & (order[None, :] <= order[:, None]))
    return PackedGroups(
        input_ids=torch.cat(tokens).to(device).unsqueeze(0),
        position_ids=torch.cat(columns).to(device).unsqueeze(0),
        allowed=allowed.to(device)[None, None],
        shift_labels=torch.cat(labels).to(device).unsqueeze(0),
        scored_at=torch.cat(scored_at).to(device),
        scored_row=torch.cat(scored_row).to(device),
        scored_col=torch.cat(scored_col).to(device),
    )


def attention_mask_for(model, packed: PackedGroups, windows: dict[str, int | None] | None = None):
    """The packed 4-D mask in the form the model's attention reads: one mask, or one per layer
    kind (``{"full_attention": …, "sliding_attention": …}``, which transformers' models with
    mixed layers take as they are) with each kind's window written in as a band over the
    tokens' columns, as transformers' own sliding mask bands the padded row's positions.
    sdpa takes a boolean mask, eager adds its mask to the scores."""
    windows = windows if windows is not None else attention_windows(text_config(model))
    eager = attention_kind(model) == "eager"
    distance = packed.position_ids[0][:, None] - packed.position_ids[0][None, :]

    def form(window):
        allowed = packed.allowed if window is None else packed.allowed & (distance < window)[None, None]
        if eager:
            return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(torch.float32).min)
        return allowed

    masks = {kind: form(window) for kind, window in windows.items()}
    return next(iter(masks.values())) if len(masks) == 1 else masks


def attention_kind(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def attention_windows(text) -> dict[str, int | None]:
    """Each layer kind's attention window (None: full). Without ``layer_types`` every layer
    has ``config.sliding_window`` (Mistral-7B-v0.1, Phi-3-mini-4k: transformers bands the mask
    whenever it is set), which the configs that gate it (``use_sliding_window``) reset to None."""
    window = getattr(text, "sliding_window", None)
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    return {kind: window if kind == "sliding_attention" or not getattr(text, "layer_types", None) else None
            for kind in sorted(kinds)}


def no_router_logits(model) -> dict:
    """Keyword arguments that stop an MoE model computing its load-balancing loss in a forward
    that only needs log-probs or a cache: that loss reads the attention mask, which a packed
    row's 4-D mask or a prefix's 2-D mask does not fit."""
    return {"output_router_logits": False} if hasattr(text_config(model), "output_router_logits") else {}


def packing_refusal(model) -> str | None:
    """Why a packed 4-D mask would not give this model what its padded forward computes
    (None: it would). Read from the model's layers, not from a list of names."""
    model = unwrapped(model)
    if getattr(model, "config", None) is None:
        return "no config"
    kind = attention_kind(model)
    if kind not in MASKED_ATTENTION:
        return f"the {kind} attention kernel ignores a 4-D mask"
    return sequence_mixers_outside_attention(model)


def packable(model) -> bool:
    """Whether a custom 4-D mask gives this model exactly what its padded forward computes."""
    return packing_refusal(model) is None


def prefill_refusal(model) -> str | None:
    """Why a prompt's cache cannot be computed once and repeated to its group (None: it can):
    a cache layer that cannot be row-selected (linear attention's recurrent and conv states)."""
    from transformers import DynamicCache

    model = unwrapped(model)
    mixers = sequence_mixers_outside_attention(model)
    if mixers:
        return mixers
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception as error:  # a cache transformers cannot build from the config
        return f"no dynamic cache ({error})"
    kinds = sorted({type(layer).__name__ for layer in layers if not hasattr(layer, "batch_select_indices")})
    return f"{'/'.join(kinds)} cache layers cannot repeat rows" if kinds else None


def scatter_scored(values: torch.Tensor, packed: PackedGroups, rows: int, completion_length: int) -> torch.Tensor:
    """Per-token values of the packed row back into TRL's ``[rows, completion]`` layout (0 at padding)."""
    out = values.new_zeros(rows, completion_length)
    return out.index_put((packed.scored_row, packed.scored_col), values[0, packed.scored_at])


class PackedGroupLogps:
    """Mixin for TRL's GRPOTrainer (and MGRPO's): the per-token log-probabilities and
    entropies of a batch computed on :func:`pack_groups`'s row when that is exact."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        probe = self._packing_probe(model)
        if compute_aux_loss or any(v is not None for v in multimodal.values()) or probe.off_reason:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss, **multimodal)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
            packed = pack_groups(ids, mask, logits_to_keep)
            chunk = None
            if packed is not None and not probe.off_reason:
                chunk = (self._packed_forward(model, packed, ids.size(0), logits_to_keep, compute_entropy)
                         if probe.checked else self._first_packed_forward(model, probe, packed, ids, mask, logits_to_keep,
                                                                          compute_entropy))
            if chunk is None:
                chunk = super()._get_per_token_logps_and_entropies(
                    model, ids, mask, logits_to_keep, compute_entropy=compute_entropy)[:2]
            logps.append(chunk[0])
            entropies.append(chunk[1])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _packing_probe(self, model) -> LeverProbe:
        probe = getattr(self, "_tifa_packing_probe", None)
        if probe is None:
            probe = self._tifa_packing_probe = LeverProbe("grpo.pack_groups")
            reason = packing_refusal(model)
            if reason:
                probe.switch_off(model, reason)
        return probe

    def _packed_forward(self, model, packed: PackedGroups, rows: int, logits_to_keep: int, compute_entropy: bool):
        plain_model = unwrapped(model)
        with self.accelerator.autocast():
            outputs = model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                            attention_mask=attention_mask_for(plain_model, packed),
                            shift_labels=packed.shift_labels, fused_lm_head=True, **no_router_logits(plain_model))
        chunk_logps = scatter_scored(outputs.log_probs, packed, rows, logits_to_keep)
        chunk_entropy = scatter_scored(outputs.entropy, packed, rows, logits_to_keep) if compute_entropy else None
        return chunk_logps, chunk_entropy

    def _first_packed_forward(self, model, probe: LeverProbe, packed, ids, mask, logits_to_keep, compute_entropy):
        """The packed forward, checked once against TRL's padded forward on the same rows.
        Returns None (TRL's path runs) when they differ or the packed forward fails."""
        probe.checked = True
        try:
            got = self._packed_forward(model, packed, ids.size(0), logits_to_keep, compute_entropy)
        except Exception as error:  # a kernel or a model head that cannot take the packed row
            probe.switch_off(model, f"the packed forward failed: {type(error).__name__}: {str(error)[:200]}")
            return None
        with torch.no_grad():
            expected = super()._get_per_token_logps_and_entropies(model, ids, mask, logits_to_keep)[0]
        scored = mask[:, -logits_to_keep:].bool()
        gap = difference(got[0][scored], expected[scored], compute_dtype(model, getattr(self, "args", None)))
        if gap:
            probe.switch_off(model, f"packed log-probs differ from the padded forward's: {gap}")
            return None
        return got

    def _prepare_inputs(self, generation_batch):
        from trl.trainer import grpo_trainer

        # TRL calls its module's shuffle_sequence_dict between generating and splitting the batch
        shuffle_rows = grpo_trainer.shuffle_sequence_dict
        grpo_trainer.shuffle_sequence_dict = functools.partial(shuffle_whole_groups, group_size=self.num_generations,
                                                               shuffle_rows=shuffle_rows)
        try:
            return super()._prepare_inputs(generation_batch)
        finally:
            grpo_trainer.shuffle_sequence_dict = shuffle_rows


def shuffle_whole_groups(batch: dict, group_size: int, shuffle_rows) -> dict:
    """TRL's ``shuffle_sequence_dict`` with groups of ``group_size`` consecutive rows (TRL's
    sampler repeats each prompt ``num_generations`` times in a row) moved as units; a batch
    that is not whole groups gets ``shuffle_rows``."""
    rows = len(next(v for v in batch.values() if v is not None))
    if rows % group_size:
        return shuffle_rows(batch)
    order = (torch.randperm(rows // group_size)[:, None] * group_size + torch.arange(group_size)).flatten()

    def permute(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[order.to(value.device)]
        return [value[i] for i in order]

    return {key: permute(value) for key, value in batch.items()}


@functools.cache
def packed_group_trainer(trainer_class: type) -> type:
    """``trainer_class`` with :class:`PackedGroupLogps` in front (one class per base, so
    pickling and isinstance checks see a stable type), its method timed by TRL's profiler
    as TRL's own is."""
    from trl.extras.profiling import profiling_decorator

    timed = profiling_decorator(PackedGroupLogps._get_per_token_logps_and_entropies)
    return type(f"PackedGroup{trainer_class.__name__}", (PackedGroupLogps, trainer_class),
                {"_get_per_token_logps_and_entropies": timed})


def prefill_once(model, training_args=None) -> LeverProbe:
    """Wrap ``model.generate``: a batch whose rows repeat a prompt is prefilled once per
    unique prompt and the KV cache repeated to every row before transformers decodes. Off
    (the plain ``generate``) for a model whose cache cannot repeat rows, or whose first shared
    prefill differs from transformers' own."""
    existing = getattr(model.generate, "_tifa_prefill_once", None)
    if existing is not None:
        return existing
    probe = LeverProbe("grpo.prefill_once")
    reason = prefill_refusal(model)
    if reason:
        probe.switch_off(model, reason)
        return probe
    plain_generate = model.generate

    @functools.wraps(plain_generate)
    def generate(*args, input_ids=None, attention_mask=None, **kwargs):
        shared = None
        if (not probe.off_reason and not args and input_ids is not None and attention_mask is not None
                and "past_key_values" not in kwargs and input_ids.size(1) > 1):
            if not probe.checked:
                check_shared_prefill(model, probe, input_ids, attention_mask, compute_dtype(model, training_args))
            if not probe.off_reason:
                shared = shared_prefill(model, input_ids, attention_mask)
        if shared is not None:
            # continuing from a prefilled cache, the first forward sees one token under the whole
            # prompt's mask, which an MoE load-balancing loss cannot pair up (and generation never uses)
            kwargs.update(past_key_values=shared, **no_router_logits(model))
        return plain_generate(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    generate._tifa_prefill_once = probe
    model.generate = generate
    return probe


def _prefill_positions(mask: torch.Tensor) -> torch.Tensor:
    # generate's own positions for left padding: count the real tokens
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def shared_prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The KV cache of every row's prompt but its last token, computed once per unique
    row; None when every row is different (nothing to share)."""
    from transformers import DynamicCache

    key = torch.cat([input_ids, attention_mask], dim=1)
    unique, row_of = torch.unique(key, dim=0, return_inverse=True)
    if len(unique) == input_ids.size(0):
        return None
    width = input_ids.size(1)
    ids, mask = unique[:, :width], unique[:, width:]
    positions = _prefill_positions(mask)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
              past_key_values=cache, use_cache=True, logits_to_keep=1, **no_router_logits(model))
    cache.batch_select_indices(row_of.to(input_ids.device))
    return cache


def check_shared_prefill(model, probe: LeverProbe, input_ids, attention_mask, dtype: torch.dtype) -> None:
    """The next-token distribution after the shared, repeated cache against one plain forward
    over every row's whole prompt; a difference or an error switches the lever off."""
    probe.checked = True
    try:
        cache = shared_prefill(model, input_ids, attention_mask)
        if cache is None:
            probe.checked = False  # nothing shared in this batch: check on the first one that shares
            return
        positions = _prefill_positions(attention_mask)
        with torch.no_grad():
            after_cache = model(input_ids=input_ids[:, -1:], attention_mask=attention_mask,
                                position_ids=positions[:, -1:], past_key_values=cache, use_cache=True,
                                **no_router_logits(model)).logits[:, -1]
            plain = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                          use_cache=False, logits_to_keep=1, **no_router_logits(model)).logits[:, -1]
    except Exception as error:  # a cache or a model that cannot continue from a repeated cache
        probe.switch_off(model, f"the shared prefill failed: {type(error).__name__}: {str(error)[:200]}")
        return
    gap = difference(torch.log_softmax(after_cache.float(), -1), torch.log_softmax(plain.float(), -1), dtype)
    if gap:
        probe.switch_off(model, f"next-token log-probs after the shared prefill differ from a plain prefill's: {gap}")
