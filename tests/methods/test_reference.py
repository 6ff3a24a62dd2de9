"""A full-parameter reference model comes from the policy's own source: the keywords TRL
rebuilds it with carry the revision and the GGUF file, for DPO, KTO and GRPO alike.
(That TRL really loads the pinned revision is checked in the ZeRO-3 rehearsals.)"""

from pathlib import Path

from tifa_lite.config import load_recipe
from tifa_lite.methods.common import Run
from tifa_lite.methods.dpo import method_kwargs
from tifa_lite.methods.grpo import grpo_args
from tifa_lite.methods.reference import reference_init_kwargs
from tifa_lite.runplan import resolve_plan

DPO = Path(__file__).resolve().parents[2] / "recipes" / "dpo_qlora_hh.yaml"
FULL = ["quant.bits=null", "lora.enabled=false"]
PINNED = "0123456789abcdef0123456789abcdef01234567"


def run_for(config, model=None) -> Run:
    return Run(config=config, work_dir=Path("/tmp/unused"), model=model, tokenizer=None, peft_config=None,
               plan=resolve_plan(config))


def test_lora_needs_no_second_model():
    assert reference_init_kwargs(run_for(load_recipe(DPO))) is None

    class ContinuedAdapter:  # a PeftModel handed over as is (continued adapter, unsloth)
        peft_config = {"default": object()}

    assert reference_init_kwargs(run_for(load_recipe(DPO, FULL), ContinuedAdapter())) is None


def test_hub_base_keeps_its_revision_and_remote_code():
    config = load_recipe(DPO, [*FULL, f"model.revision={PINNED}", "model.trust_remote_code=true"])
    assert reference_init_kwargs(run_for(config)) == {"revision": PINNED, "trust_remote_code": True}


def test_gguf_base_keeps_its_file(tmp_path):
    gguf = tmp_path / "base.Q8_0.gguf"
    gguf.write_bytes(b"")  # resolving only checks that the file is there
    config = load_recipe(DPO, [*FULL, f"model.name_or_path={gguf}"])
    assert reference_init_kwargs(run_for(config)) == {
        "revision": None, "trust_remote_code": False, "gguf_file": "base.Q8_0.gguf",
    }


def test_every_method_with_a_reference_hands_it_to_trl():
    dpo = load_recipe(DPO, [*FULL, f"model.revision={PINNED}"])
    assert method_kwargs(run_for(dpo))["model_init_kwargs"]["revision"] == PINNED
    kto = load_recipe(DPO, [*FULL, f"model.revision={PINNED}", "train.method=kto"])
    assert method_kwargs(run_for(kto))["model_init_kwargs"]["revision"] == PINNED
    grpo = ["train.method=grpo", "grpo.num_generations=2", "train.per_device_batch_size=2", *FULL,
            f"model.revision={PINNED}"]
    assert grpo_args(run_for(load_recipe({}, grpo)), [1.0]).model_init_kwargs["revision"] == PINNED
    # beta = 0: TRL builds no reference, so nothing to hand over.
    assert grpo_args(run_for(load_recipe({}, [*grpo, "grpo.beta=0"])), [1.0]).model_init_kwargs is None
