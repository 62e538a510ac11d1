"""IA3 and LoHa beside LoRA (issue 15's "adapter layers"): the form shows their fields, the
overfitting guard's rank warning follows the rank, and one process serves versions of
different adapter kinds on one base model. Training, export and merging of each kind are in
test_training_engine.py and test_registry.py, parametrized over the kinds."""

import json
import re

import pytest

from experiments.forms import TECHNIQUE_GROUPS
from experiments.models import Experiment
from experiments.training import guards
from registry import services
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_version

GUARD_PARAMS = {
    "num_train_epochs": 3,
    "max_steps": -1,
    "lora_r": 128,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "gpus": 1,
    "save_steps": 50,
    "eval_steps": 50,
}


@pytest.mark.parametrize(
    "technique, warned",
    [("lora", "LoRA r=128"), ("loha", "LoHa r=128"), ("ia3", None), ("prefix", None)],
)
def test_the_rank_warning_is_for_techniques_with_a_rank(technique, warned):
    """LoHa's r is a rank (its Hadamard product reaches r squared); IA3 has none."""
    found = guards.warnings(technique, GUARD_PARAMS, {"train": 500, "eval": 50})
    ranks = [w for w in found if " r=" in w]
    assert ranks == ([] if warned is None else [ranks[0]])
    if warned:
        assert ranks[0].startswith(f"{warned} for 500 training examples")


def test_the_form_shows_each_kinds_fields_and_creates_an_ia3_experiment(
    browser_client, team, owner, tiny_model
):
    page = browser_client.get("/experiments/new/").content.decode()
    groups = json.loads(
        re.search(r'id="technique-groups"[^>]*>(.*?)</script>', page, re.S).group(1)
    )
    assert groups["ia3"] == TECHNIQUE_GROUPS["ia3"] and "ia3" in groups["ia3"]
    assert "rank" in groups["loha"] and "lora" not in groups["loha"]  # no DoRA, no lora_dropout
    for name, group in [
        ("ia3_target_modules", "ia3"),
        ("ia3_feedforward_modules", "ia3"),
        ("lora_r", "rank"),
        ("use_dora", "lora"),
    ]:
        assert re.search(rf'data-group="{group}">\s*<label for="hp_{name}"', page), name
    version = make_version(team, owner)
    r = browser_client.post(
        "/experiments/new/",
        {
            "team": team.pk,
            "name": "ia3-from-form",
            "dataset_version": version.pk,
            "base_model": tiny_model,
            "technique": "ia3",
            "hp_ia3_target_modules": "k_proj, v_proj",
            "hp_ia3_feedforward_modules": "none",
            "hp_max_steps": "4",
            "hp_max_length": "128",
        },
    )
    assert r.status_code == 302, r.content.decode()[-2000:]
    experiment = Experiment.objects.get(name="ia3-from-form")
    params = experiment.hyperparameters
    assert params["ia3_target_modules"] == ["k_proj", "v_proj"]
    assert params["ia3_feedforward_modules"] == [] and params["learning_rate"] == 3e-3
    # k and v vectors of the kv width (2 heads of 8) in each of the tiny model's 2 layers
    assert experiment.estimate["cuda"]["trainable_params"] == 2 * (16 + 16)


def test_a_bad_feedforward_module_is_refused_beside_its_field(
    browser_client, team, owner, tiny_model
):
    version = make_version(team, owner)
    r = browser_client.post(
        "/experiments/new/",
        {
            "team": team.pk,
            "name": "ia3-bad",
            "dataset_version": version.pk,
            "base_model": tiny_model,
            "technique": "ia3",
            "hp_ia3_target_modules": "k_proj,v_proj",
            "hp_ia3_feedforward_modules": "up_proj",
        },
    )
    assert r.status_code == 422 and 'id="err_ia3_feedforward_modules"' in r.content.decode()
    assert not Experiment.objects.filter(name="ia3-bad").exists()


def test_one_process_serves_versions_of_different_adapter_kinds(api, team, owner, tiny_model):
    """peft keeps one adapter type on a model: a LoRA, an IA3 and a LoHa version of one
    registered model are served side by side, each answering as its own adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune_hub.storage import artifact_path
    from registry.serving import server

    registered = services.model_create(team=team, name="kinds", by=owner)
    versions = [
        services.version_register(
            model=registered, run=trained_run(team, owner, tiny_model, seed=1, kind=kind), by=owner
        )
        for kind in ("lora", "ia3", "loha", "lora")
    ]
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    for version in versions + versions[:2]:  # back and forth, on cached models
        served, _ = server._model_for(version)
        alone = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model), artifact_path(version.artifact_path)
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(served(ids).logits, alone(ids).logits, rtol=0, atol=1e-5)
    assert sorted(kind for _, kind in server.bases) == ["IA3", "LOHA", "LORA"]
    services.alias_promote(
        model=registered, alias="production", version=versions[1], by=owner, reason="ia3"
    )
    r = api.post(
        "/api/registry/models/kinds/aliases/production/generate",
        {"prompt": "Triage: late parcel", "max_new_tokens": 4},
    )
    assert r.status_code == 200 and r.json()["version"] == 2
