"""Where a full-parameter run's reference model comes from (DPO, KTO, GRPO with beta > 0).

With LoRA the reference is the base with the adapter disabled: no second model. Without
LoRA, TRL builds a second model itself from the policy's ``config._name_or_path`` and the
config's ``model_init_kwargs`` (under ZeRO-3 it is partitioned at load like the policy,
because the trainer's DeepSpeed config is live by then). The name alone is not the base
the policy was loaded from: a hub id without its revision is the newest commit, and a
folder without the GGUF file name is another model in that folder, or none. So TRL gets
the same source keywords every other load of the base uses.
"""

from __future__ import annotations

import logging
from typing import Any

from tifa_lite.methods.common import Run
from tifa_lite.modeling.resolve import source_kwargs

log = logging.getLogger(__name__)


def reference_init_kwargs(run: Run) -> dict[str, Any] | None:
    """``model_init_kwargs`` for TRL's reference model, or None when no second model is built."""
    if run.config.lora.enabled or hasattr(run.model, "peft_config"):
        return None
    resolved = run.plan.model
    kwargs = source_kwargs(run.config.model, resolved)
    # TRL warns that model_init_kwargs are ignored because the policy is already loaded; it
    # still builds the reference with them, which is what they are for here.
    log.info("reference model: a second copy TRL loads from %s with %s (the policy's source)", resolved.path, kwargs)
    return kwargs
