"""Trained runs without training: a real LoRA adapter (random, so versions answer
differently) saved where a run's output goes. Registry tests need outputs, not training."""

import hashlib

from experiments.models import TrainingRun
from experiments.training import services
from finetune_hub.storage import artifact_path
from tests.training_helpers import make_experiment


def trained_run(team, owner, tiny_model, seed: int, experiment=None) -> TrainingRun:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    experiment = experiment or make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(
            r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    )
    folder = artifact_path(f"runs/{run.pk}/final")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    TrainingRun.objects.filter(pk=run.pk).update(
        status="succeeded", output_path=f"runs/{run.pk}/final", output_files=files, step=6
    )
    run.refresh_from_db()
    return run
