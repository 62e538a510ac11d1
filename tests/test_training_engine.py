import json

import pytest
import torch
from safetensors.torch import load_file

from experiments.models import MetricPoint, TrainingRun
from experiments.services import run_enqueue
from experiments.training.runner import train_next_run
from finetune_hub.storage import artifact_path, assert_no_pickles
from tests.support.training_helpers import make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


def load_output(base: str, folder, adapter: bool):
    """Loads what a run saved the way a user would, with plain transformers and peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if adapter:
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    return AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.single_db
@pytest.mark.parametrize(
    "technique, task, weights",
    [
        ("lora", "instruction", "adapter_model.safetensors"),
        ("full", "chat", "model.safetensors"),
        ("prefix", "completion", "adapter_model.safetensors"),
        ("ia3", "instruction", "adapter_model.safetensors"),
        ("loha", "chat", "adapter_model.safetensors"),
        ("dpo", "preference", "adapter_model.safetensors"),
    ],
)
def test_technique_trains_and_saves_safetensors(
    team,
    owner,
    tiny_model,
    cpu_worker,
    technique,
    task,
    weights,
):
    experiment = make_experiment(team, owner, tiny_model, technique, task)
    run = run_enqueue(experiment=experiment, by=owner)
    run = train_next_run(run_id=run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    assert run.step == 6 and run.total_steps == 6
    final = artifact_path(run.output_path)
    assert_no_pickles(final)
    tensors = load_file(final / weights)
    assert tensors and run.output_files[weights]
    model = load_output(tiny_model, final, adapter=weights.startswith("adapter")).eval()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    if weights.startswith("adapter"):
        adapter = json.loads((final / "adapter_config.json").read_text())
        expected = {"dpo": "lora", "prefix": "prefix_tuning"}.get(technique, technique)
        assert adapter["peft_type"] == expected.upper()
        with torch.no_grad(), model.disable_adapter():
            base_logits = model(ids).logits
        assert (logits - base_logits).abs().max() > 1e-4  # six steps moved the adapter
    if technique in ("ia3", "loha"):  # folds into the weights, as a merged export does
        with torch.no_grad():
            merged = model.merge_and_unload()(ids).logits
        torch.testing.assert_close(merged, logits, rtol=0, atol=1e-4)
    assert run.base_model_info["dtype"] == "float32" and run.base_model_info["device"] == "cpu"
    assert MetricPoint.objects.filter(run=run, key="loss").count() >= 5
    # The training process samples its system metrics beside the loss.
    ram = MetricPoint.objects.filter(run=run, key="system/ram_gib").values_list("value", flat=True)
    assert ram and all(0.05 < gib < 64 for gib in ram)
    assert MetricPoint.objects.filter(run=run, key="system/cpu_percent").exists()
    assert list(run.checkpoints.values_list("step", flat=True)) == [3, 6]
    for checkpoint in run.checkpoints.all():
        assert_no_pickles(artifact_path(checkpoint.path))
