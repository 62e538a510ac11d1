"""RLHF with a reward model: TRL's RewardTrainer on a preference dataset version (LoRA with
its score head, or every weight), its pairwise accuracy on the held-out pairs as a curve; then
GRPO (TRL's GRPOTrainer) against that reward model, with reward and KL curves. A reward model
scores answers and writes none, so it is no evaluation subject, comparison side or registry
version. Trained on the tiny random model, a few steps each."""

import json

import pytest
import torch
from safetensors.torch import load_file

from evaluation.subjects import Kind, Subject
from experiments.models import TrainingRun
from experiments.services import experiment_create, run_enqueue
from experiments.training import hyperparameters as hp
from experiments.training.runner import train_next_run
from finetune_hub.storage import artifact_path, assert_no_pickles
from registry.models import RegisteredModel
from registry.services import version_register
from tests.support.rlhf import GRPO, REWARD, series, trained
from tests.support.training_helpers import make_experiment, make_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow  # two trainings; the database's part is run by the tests below on both
def test_reward_model_learns_the_preferences_then_grpo_trains_against_it(
    team, owner, tiny_model, cpu_worker
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_run = trained(
        make_experiment(team, owner, tiny_model, "reward", "preference", **REWARD), owner
    )
    final = artifact_path(reward_run.output_path)
    assert_no_pickles(final)
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["task_type"] == "SEQ_CLS"
    # The score head is new: it trains and is saved beside the adapters.
    assert any("score" in key for key in load_file(final / "adapter_model.safetensors"))

    held_out = series(reward_run, "eval_pairwise_accuracy")
    assert len(held_out) == 3  # before training (step 0), steps 6 and 12
    assert all(0 <= a <= 1 for a in held_out)
    # The random score head already leans one way on these pairs (accuracy can start high);
    # training widens the held-out margin between chosen and rejected well beyond that.
    margins = series(reward_run, "eval_reward_margin")
    assert held_out[-1] >= 0.9 and margins[-1] > margins[0] + 0.1, (held_out, margins)
    assert series(reward_run, "pairwise_accuracy") and series(reward_run, "reward_margin")

    # Loaded as a user would: the base as a one-output classifier, the adapter on top.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    base.config.pad_token_id = tokenizer.eos_token_id
    model = PeftModel.from_pretrained(base, final).eval()

    def score(text: str) -> float:
        with torch.no_grad():
            return model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()

    prompt = "Describe item 7"
    assert score(prompt + "A clear answer 7") > score(prompt + "meh 7")

    # GRPO against it: the adapters and the score head are merged into the base to score.
    policy = grpo_trained(team, owner, tiny_model, reward_run, "lora")
    assert (artifact_path(policy.output_path) / "adapter_model.safetensors").exists()


def grpo_trained(team, owner, tiny_model, reward_run, rl_base: str) -> TrainingRun:
    experiment = experiment_create(
        team=team,
        name=f"grpo-{rl_base}",
        dataset_version=make_version(team, owner, "instruction", n=40),
        base_model=tiny_model,
        technique="grpo",
        hyperparameters=GRPO | {"reward_run": reward_run.pk, "rl_base": rl_base},
        by=owner,
    )
    run = trained(experiment, owner)
    assert run.step == 2
    assert f"Reward model: run {reward_run.pk}" in run.log_tail
    for key in ("reward", "kl", "completion_length", "loss"):
        assert len(series(run, key)) == 2, key
    assert all(k >= 0 for k in series(run, "kl"))
    # The base policy's held-out reward, then after training (evaluations at 0 and 2).
    assert len(series(run, "eval_reward")) == 2
    assert_no_pickles(artifact_path(run.output_path))
    # The policy writes answers: it is evaluated and registered like any fine-tuned model.
    assert Subject(Kind.RUN, run=run.pk).for_team(team).base_model == tiny_model
    model = RegisteredModel.objects.create(team=team, name=f"policy-{run.pk}", created_by=owner)
    assert version_register(model=model, run=run, by=owner).source_run == run
    return run


@pytest.mark.slow
def test_full_reward_model_and_full_grpo(team, owner, tiny_model, cpu_worker):
    from transformers import AutoModelForSequenceClassification

    params = {**REWARD, "max_steps": 2, "eval_steps": 2, "save_steps": 2, "rl_base": "full"}
    experiment = make_experiment(team, owner, tiny_model, "reward", "preference", **params)
    assert experiment.hyperparameters["learning_rate"] == 2e-3
    reward_run = trained(experiment, owner)
    final = artifact_path(reward_run.output_path)
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(final)
    assert model.config.num_labels == 1 and model.score.weight.shape[0] == 1
    # A full policy keeps a reference copy for the KL term (kl_coef 0.04 by default).
    policy = grpo_trained(team, owner, tiny_model, reward_run, "full")
    assert (artifact_path(policy.output_path) / "model.safetensors").exists()


@pytest.mark.slow  # six trainings; the checkpoint code is the one every technique uses
# The reward case found that a reward model's new score head was drawn from the process's
# unseeded RNG (loading.load_model now seeds it from the run's seed).
@pytest.mark.parametrize("technique", ["reward", "grpo"])
def test_reward_and_grpo_runs_resumed_after_a_cancel_equal_uninterrupted_ones(
    team, owner, tiny_model, cpu_worker, reward_run, technique
):
    """A reward model (pairs through RewardTrainer) and a GRPO policy (completions sampled
    from the policy each step) cancelled after a checkpoint and resumed end with the weights
    an uninterrupted run ends with: the optimizer, the scheduler and every RNG that drives
    dropout and sampling come back from the safetensors checkpoint."""
    from experiments import services

    if technique == "reward":
        version = make_version(team, owner, "preference", n=40)
        # about 30 steps a second here: the cancel, polled each second after the first
        # checkpoint, lands well before the end
        params = {**REWARD, "max_steps": 300, "save_steps": 20, "eval_steps": 1000}
    else:
        version = make_version(team, owner, "instruction", n=40)
        params = {**GRPO, "reward_run": reward_run.pk, "max_steps": 24, "eval_steps": 1000}

    def queued(name):
        experiment = experiment_create(
            team=team,
            name=f"{technique}-{name}",
            dataset_version=version,
            base_model=tiny_model,
            technique=technique,
            hyperparameters=params | {"logging_steps": 2},
            by=owner,
        )
        return run_enqueue(experiment=experiment, by=owner, dispatch=False)

    reference = train_next_run(run_id=queued("reference").pk)

    def cancel(current):
        if current.checkpoints.exists() and not current.cancel_requested:
            services.run_cancel(run=current, by=owner)

    run = train_next_run(run_id=queued("cancelled").pk, on_poll=cancel)
    assert run.status == "cancelled" and run.step < params["max_steps"], run.log_tail[-2000:]
    services.run_resume(run=run, by=owner)
    run = train_next_run(run_id=run.pk)
    assert (run.status, run.step, reference.status) == (
        "succeeded",
        params["max_steps"],
        "succeeded",
    )
    assert "Resuming from" in run.log_tail or run.attempt == 2
    a = load_file(artifact_path(reference.output_path) / "adapter_model.safetensors")
    b = load_file(artifact_path(run.output_path) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_a_reward_models_new_score_head_is_drawn_from_the_runs_seed(team, owner, tiny_model):
    """The score head is the one part of a reward model the base has not got: two loads for
    one run draw the same head (a resumed attempt and an uninterrupted run start alike), and
    another seed draws another."""
    from types import SimpleNamespace

    from experiments.training import loading, speed

    def head(seed: int, process_rng: int):
        params = hp.validate("reward", {"seed": seed}, context_length=None)
        experiment = SimpleNamespace(
            hyperparameters=params, technique="reward", base_model=tiny_model
        )
        torch.manual_seed(process_rng)  # whatever the process's RNG was before
        model, _ = loading.load_model(
            SimpleNamespace(experiment=experiment), speed.effective({}, technique_is_sft=False)
        )
        return model.score.weight.detach().clone()

    assert torch.equal(head(42, process_rng=1), head(42, process_rng=2))
    assert not torch.equal(head(42, process_rng=1), head(43, process_rng=1))
