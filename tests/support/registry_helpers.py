"""Trained runs without training: a real adapter (LoRA, IA3 or LoHa; random, so versions
answer differently) saved where a run's output goes. Registry tests need outputs, not
training."""

import hashlib

import pytest

from experiments import services
from experiments.models import TrainingRun
from finetune_hub.storage import artifact_path
from registry import services as registry
from tests.support.training_helpers import make_experiment


def adapter_config(kind: str):
    """An adapter config of the kind. LoRA starts random; IA3 and LoHa start as the identity
    and trained_run moves them (their own random starts answer as the base does here)."""
    from peft import IA3Config, LoHaConfig, LoraConfig

    if kind == "ia3":
        return IA3Config(
            target_modules=["k_proj", "v_proj", "down_proj"],
            feedforward_modules=["down_proj"],
            task_type="CAUSAL_LM",
        )
    if kind == "loha":
        return LoHaConfig(
            r=4,
            alpha=8,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        )
    return LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )


def trained_run(
    team, owner, tiny_model, seed: int, experiment=None, kind: str = "lora"
) -> TrainingRun:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    experiment = experiment or make_experiment(team, owner, tiny_model, technique=kind)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), adapter_config(kind))
    if kind != "lora":
        with torch.no_grad():  # a "trained" adapter: each weight moved by N(0, 1)
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter))
    folder = artifact_path(f"runs/{run.pk}/final")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    TrainingRun.objects.filter(pk=run.pk).update(
        status="succeeded", output_path=f"runs/{run.pk}/final", output_files=files, step=6
    )
    run.refresh_from_db()
    return run


# A model "triage" of the team with two versions, trained runs of one experiment that carry a
# peft adapter of `adapter_kind` (conftest.py offers these fixtures to every test; a module's
# own fixture of the name wins; the export and serving tests parametrize adapter_kind).
@pytest.fixture
def model(team, owner):
    return registry.model_create(team=team, name="triage", by=owner)


@pytest.fixture
def adapter_kind():
    return "lora"


@pytest.fixture
def runs(team, owner, tiny_model, adapter_kind):
    first = trained_run(team, owner, tiny_model, seed=1, kind=adapter_kind)
    second = trained_run(
        team, owner, tiny_model, seed=2, experiment=first.experiment, kind=adapter_kind
    )
    return [first, second]


@pytest.fixture
def versions(model, runs, owner):
    return [registry.version_register(model=model, run=r, by=owner) for r in runs]
