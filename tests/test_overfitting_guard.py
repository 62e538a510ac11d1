"""The overfitting guard: early stopping on eval loss (on by default for a small training
split, the best checkpoint kept as the output, the reason on the run), the warnings beside
the estimate before a run is queued, and the flag when eval loss rises while training loss
falls."""

import pytest
import torch
from safetensors.torch import load_file

from experiments import metric_store, services
from experiments.training import guards
from experiments.training.runner import train_next_run
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import FAST, make_experiment, make_version

SMALL = {"train": 96, "eval": 12, "test": 12}
DEFAULTS = {"save_steps": 50, "eval_steps": 50}


@pytest.mark.parametrize(
    "params, counts, patience",
    [
        ({**DEFAULTS, "early_stopping_patience": None}, SMALL, 3),  # small split: on
        ({**DEFAULTS, "early_stopping_patience": None}, {"train": 1000, "eval": 9}, 0),
        ({**DEFAULTS, "early_stopping_patience": None}, {"train": 96}, 0),  # nothing to watch
        ({"save_steps": 5, "eval_steps": 1000, "early_stopping_patience": None}, SMALL, 0),
        ({**DEFAULTS, "early_stopping_patience": 0}, SMALL, 0),  # off on request
        ({**DEFAULTS, "early_stopping_patience": 7}, {"train": 5000, "eval": 9}, 7),
        ({**DEFAULTS, "early_stopping_patience": 7}, {"train": 5000}, 0),
    ],
)
def test_early_stopping_is_on_by_default_for_a_small_split_with_an_eval_split(
    params, counts, patience
):
    assert guards.early_stopping_patience(params, counts) == patience


def test_the_guides_warnings_name_the_figures():
    params = {
        **DEFAULTS,
        "early_stopping_patience": None,
        "num_train_epochs": 8,
        "max_steps": -1,
        "lora_r": 128,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "gpus": 1,
    }
    assert guards.warnings("lora", params, {"train": 60, "eval": 10}) == [
        "8.0 epochs: more than 5 passes over the data usually overfits; watch the eval loss "
        "(early stopping is on (patience 3))",
        "LoRA r=128 for 60 training examples: a rank this high can memorise a small set; "
        "r 8 to 16 is usual under 1,000 examples",
        "Only 60 training examples: under 100 rarely teach a task and overfit quickly",
    ]
    # max_steps wins over epochs: 400 steps of 8 examples on 400 examples are 8 passes.
    steps = {**params, "max_steps": 400, "lora_r": 16}
    assert guards.warnings("full", steps, {"train": 400})[0].startswith("8.0 epochs")
    assert guards.warnings("full", steps, {"train": 400})[-1] == (
        "No eval examples: overfitting cannot be seen, and early stopping is off "
        "(publish a version with an eval split)"
    )
    # The rank warning is for adapters only; a sensible setup gets no warning at all.
    assert guards.warnings("full", params, {"train": 60, "eval": 10})[1].startswith("Only 60")
    sane = {**params, "num_train_epochs": 3, "lora_r": 16}
    assert guards.warnings("lora", sane, {"train": 5000, "eval": 500}) == []


def series(pairs):
    return {"steps": [s for s, _ in pairs], "values": [v for _, v in pairs]}


def test_eval_loss_rising_while_training_loss_falls_is_flagged_where_it_began():
    train = series([(s, 3.0 - s / 100) for s in range(0, 101, 5)])
    rising = series([(0, 3.0), (25, 2.0), (50, 1.8), (75, 1.9), (100, 2.1)])
    assert guards.diverging(train, rising) == {
        "step": 50,
        "message": "Overfitting: eval loss has risen since step 50 (1.8 to 2.1) while "
        "training loss kept falling; the lowest eval loss was 1.8 at step 50",
    }
    # One rise is noise; a rise while training loss rises too is not overfitting.
    once = series([(0, 3.0), (25, 2.0), (50, 1.8), (75, 1.7), (100, 1.9)])
    assert guards.diverging(train, once) is None
    flat_train = series([(s, 2.0 + s / 100) for s in range(0, 101, 5)])
    assert guards.diverging(flat_train, rising) is None
    assert guards.diverging(None, rising) is None and guards.diverging(train, None) is None


@pytest.mark.django_db
def test_the_metrics_api_flags_overfitting_and_the_estimate_warns(
    api, outsider_api, team, owner, tiny_model
):
    run = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    points = [(run.pk, s, "loss", 3.0 - s / 100) for s in range(0, 101, 5)]
    points += [(run.pk, s, "eval_loss", v) for s, v in [(0, 3.0), (50, 1.8), (75, 1.9), (100, 2.1)]]
    metric_store.points_ingest(points)
    body = api.get(f"/api/runs/{run.pk}/metrics", keys="loss,eval_loss").json()
    assert body["overfitting"]["step"] == 50
    assert api.get(f"/api/runs/{run.pk}/metrics", keys="loss").json()["overfitting"] is None

    version = make_version(team, owner, n=60)
    payload = {
        "base_model": tiny_model,
        "technique": "lora",
        "hyperparameters": {"lora_r": 64, "num_train_epochs": 6},
        "dataset_version": version.pk,
    }
    warned = api.post("/api/experiments/estimate", payload).json()["warnings"]
    assert [w.split(":")[0] for w in warned] == [
        "6.0 epochs",
        f"LoRA r=64 for {version.counts['train']} training examples",
        f"Only {version.counts['train']} training examples",
    ]
    assert (
        api.post("/api/experiments/estimate", {**payload, "dataset_version": None}).json()[
            "warnings"
        ]
        == []
    )
    refused = outsider_api.post("/api/experiments/estimate", payload)
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"field": "dataset_version", "message": "No such dataset version in your teams"}
    ]


def test_patience_needs_checkpoints_saved_at_evaluations(api, team, owner, tiny_model, db):
    payload = {
        "base_model": tiny_model,
        "technique": "lora",
        "hyperparameters": {"early_stopping_patience": 2, "save_steps": 5, "eval_steps": 3},
    }
    r = api.post("/api/experiments/estimate", payload)
    assert r.status_code == 422 and r.json()["errors"] == [
        {
            "field": "hyperparameters.early_stopping_patience",
            "message": "early stopping keeps the best checkpoint, so save_steps (5) must be "
            "a multiple of eval_steps (3)",
        }
    ]


@pytest.mark.single_db
@pytest.mark.django_db(transaction=True)
def test_early_stopping_ends_the_run_and_keeps_the_best_checkpoint_as_the_output(
    team, owner, tiny_model, cpu_worker, browser_client
):
    """No improvement can be as large as 100: the second evaluation after the first one that
    sets the best stops training (patience 1); the output is the best checkpoint's adapter."""
    experiment = make_experiment(
        team,
        owner,
        tiny_model,
        **{**FAST, "max_steps": 30, "early_stopping_patience": 1},
        early_stopping_min_delta=100.0,
    )
    run = train_next_run(
        run_id=services.run_enqueue(experiment=experiment, by=owner, dispatch=False).pk
    )
    assert (run.status, run.step) == ("succeeded", 6), run.error
    best = next(c for c in run.checkpoints.all() if f"step {c.step} (eval loss" in run.stop_reason)
    assert run.stop_reason.startswith(
        "Stopped early at step 6 of 30: eval loss did not improve by more than 100 in 1 "
        f"evaluations. The output is the best checkpoint, step {best.step} (eval loss "
    )
    output = load_file(artifact_path(run.output_path) / "adapter_model.safetensors")
    kept = load_file(artifact_path(best.path) / "adapter_model.safetensors")
    assert output.keys() == kept.keys()
    for name in output:
        torch.testing.assert_close(output[name], kept[name], rtol=0, atol=0)
    page = browser_client.get(f"/runs/{run.pk}/").content.decode()
    assert "Stopped early at step 6 of 30" in page.split('id="stop-reason"')[1][:400]
