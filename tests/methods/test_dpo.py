import math

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.methods import get_method
from tifa_lite.methods.common import Run
from tifa_lite.methods.dpo import dpo_loss_types, method_kwargs, trl_classes
from tifa_lite.modeling import load_for_training
from tifa_lite.runplan import resolve_plan


def make_run(model_dir, sample_data, tmp_path, method="dpo", **overrides):
    items = {
        "model.name_or_path": str(model_dir),
        "data.path": str(sample_data / "hh_rlhf_sample.jsonl"),
        "data.max_length": 128, "data.limit": 4,
        "train.method": method, "train.max_steps": 1, "train.per_device_batch_size": 2,
        "train.gradient_checkpointing": False, "train.progress_bar": False,
        "train.output_dir": str(tmp_path / "out"), "train.learning_rate": 1e-3,
        "train.warmup_ratio": 0.0,  # one step: a warmup would make its learning rate 0
        "lora.r": 4, "lora.alpha": 8,
    }
    items.update(overrides)
    config = load_recipe("recipes/dpo_qlora_hh.yaml", items)
    model, tokenizer, peft_config = load_for_training(config)
    return Run(config=config, work_dir=tmp_path / "work", model=model, tokenizer=tokenizer,
               peft_config=peft_config, plan=resolve_plan(config))


def test_loss_types_come_from_installed_trl():
    losses = dpo_loss_types()
    assert {"sigmoid", "ipo", "hinge", "robust"} <= losses
    assert "simpo" not in losses  # TRL keeps SimPO in CPO, hence train.method=simpo


def test_method_kwargs(tmp_path):
    def kwargs(**o):
        config = load_recipe("recipes/dpo_qlora_hh.yaml", o)
        return method_kwargs(Run(config, tmp_path, None, None, None, resolve_plan(config)))

    assert kwargs(**{"dpo.beta": 0.3})["beta"] == 0.3
    assert kwargs()["loss_type"] == ["sigmoid"]
    simpo = kwargs(**{"train.method": "simpo", "dpo.simpo_gamma": 0.8})
    assert simpo["loss_type"] == "simpo" and simpo["cpo_alpha"] == 0.0 and simpo["simpo_gamma"] == 0.8
    kto = kwargs(**{"train.method": "kto", "dpo.desirable_weight": 1.3})
    assert kto["loss_type"] == "kto" and kto["desirable_weight"] == 1.3
    with pytest.raises(ConfigError, match="dpo.loss_type=\\['simpo'\\] is not a DPO loss"):
        kwargs(**{"dpo.loss_type": "simpo"})
    with pytest.raises(ConfigError, match="train.method=kto"):
        kwargs(**{"train.method": "kto", "dpo.loss_type": "ipo"})


def test_dpo_trl_args_are_typed_by_the_method_config_class(tmp_path):
    from tifa_lite.methods.common import make_config

    def args(**o):
        config = load_recipe("recipes/dpo_qlora_hh.yaml", o)
        run = Run(config, tmp_path, None, None, None, resolve_plan(config))
        config_cls, _ = trl_classes(config.train.method)
        return make_config(config_cls, run, extra=config.dpo.trl_args, extra_key="dpo.trl_args", **method_kwargs(run))

    assert args(**{"dpo.trl_args": {"label_smoothing": "1e-1"}}).label_smoothing == 0.1
    with pytest.raises(ConfigError, match=r"dpo.trl_args.label_smoothin: trl.DPOConfig has no .*'label_smoothing'"):
        args(**{"dpo.trl_args": {"label_smoothin": 0.1}})
    with pytest.raises(ConfigError, match=r"dpo.trl_args.cpo_alpha: trl.ORPOConfig has no setting"):
        args(**{"train.method": "orpo", "dpo.trl_args": {"cpo_alpha": 1.0}})
    with pytest.raises(ConfigError, match=r"^dpo.loss_type, dpo.loss_weights: trl.DPOConfig refused these settings: `loss_weights` must"):
        args(**{"dpo.loss_type": ["sigmoid", "ipo"], "dpo.loss_weights": [1.0]})


def test_every_preference_method_has_a_trl_trainer():
    for method in ("dpo", "kto", "orpo", "simpo"):
        config_cls, trainer_cls = trl_classes(method)
        assert trainer_cls.__name__.endswith("Trainer")


def test_dpo_qlora_reference_is_the_base_with_adapter_disabled(tiny_model_dir, sample_data, tmp_path):
    run = make_run(tiny_model_dir, sample_data, tmp_path)
    trainer = get_method("dpo").build_trainer(run)
    # No second model: TRL disables the adapter for the reference pass.
    assert trainer.ref_model is None
    assert type(trainer.model).__name__ == "PeftModelForCausalLM"
    assert getattr(trainer.model.get_base_model(), "is_loaded_in_4bit", False)
    assert run.data_report["train_pairs"] == 4
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    output = trainer.train()
    assert math.isfinite(output.training_loss)
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not (p == before[n]).all()]
    assert moved and all("lora_" in n for n in moved)


@pytest.mark.parametrize("method", ["orpo", "kto", "simpo"])
def test_other_preference_methods_train_a_step(method, tiny_model_dir, sample_data, tmp_path):
    run = make_run(tiny_model_dir, sample_data, tmp_path, method=method, **{"quant.bits": None})
    trainer = get_method(method).build_trainer(run)
    assert type(trainer).__name__ == {"orpo": "ORPOTrainer", "kto": "KTOTrainer", "simpo": "CPOTrainer"}[method]
    output = trainer.train()
    assert math.isfinite(output.training_loss)


@pytest.mark.slow
def test_dpo_recipe_end_to_end_on_embedded_model(sample_data, tmp_path):
    from tifa_lite.evaluation.preference import evaluate_preference_files
    from tifa_lite.training.runner import train

    result = train("recipes/dpo_qlora_hh.yaml", overrides={
        "model.name_or_path": "smollm2-135m-instruct", "data.max_length": 192, "data.overlength": "drop",
        "data.limit": 8, "train.max_steps": 2, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
        "train.gradient_checkpointing": False, "train.output_dir": str(tmp_path / "dpo"), "train.progress_bar": False,
    })
    assert result.global_step == 2 and (result.output_dir / "adapter_config.json").is_file()
    scored = evaluate_preference_files(str(sample_data / "hh_rlhf_sample.jsonl"), adapter=str(result.output_dir),
                                       limit=4, max_length=192)
    assert scored["kind"] == "implicit_reward" and scored["n"] == 4 and scored["ties"] < 4


def test_hh_rlhf_raw_trains_on_the_raw_text_without_a_chat_template(tiny_model_dir, sample_data, tmp_path):
    run = make_run(tiny_model_dir, sample_data, tmp_path, **{"quant.bits": None, "data.format": "hh_rlhf_raw",
                                                             "data.overlength": "drop", "data.max_length": 256})
    trainer = get_method("dpo").build_trainer(run)
    row = trainer.train_dataset[0]
    prompt = run.tokenizer.decode(row["prompt_ids"] if "prompt_ids" in row else row["prompt_input_ids"])
    assert prompt.startswith("\n\nHuman: ") and prompt.endswith("\n\nAssistant:")
    assert "<|im_start|>" not in prompt
    assert math.isfinite(trainer.train().training_loss)


def test_dpo_reference_of_a_looped_run_is_the_looped_base(tiny_model_dir, sample_data, tmp_path):
    """model.layer_loop: the reference TRL computes (adapter off) is the looped base, i.e. an ordinary
    model whose stack lists the span once per pass; not the unlooped base, not the policy."""
    import torch
    from transformers import AutoModelForCausalLM

    run = make_run(tiny_model_dir, sample_data, tmp_path, **{
        "quant.bits": None, "model.layer_loop.start": 0, "model.layer_loop.end": 2, "model.layer_loop.repeats": 2})
    trainer = get_method("dpo").build_trainer(run)
    assert trainer.ref_model is None and len(trainer.model.get_base_model().model.layers) == 4
    assert math.isfinite(trainer.train().training_loss)  # one step: the adapter is no longer zero
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    ref = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))

    def logps(model):
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)[:, 1:]
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        per_token = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (per_token * (labels != -100)).sum(-1)

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    unlooped = logps(plain)
    layers = plain.model.layers
    plain.model.layers = torch.nn.ModuleList([layers[0], layers[1], *__import__("copy").deepcopy([layers[0], layers[1]])])
    for slot, layer in enumerate(plain.model.layers):
        layer.self_attn.layer_idx = slot
    plain.config.num_hidden_layers = 4
    torch.testing.assert_close(ref, logps(plain), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ref, unlooped, atol=1e-3)
    trainer.model.eval()
    assert not torch.allclose(ref, logps(trainer.model), atol=1e-4)  # the policy has moved away from it
