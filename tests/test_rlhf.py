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
from experiments.models import MetricPoint, TrainingRun
from experiments.services import experiment_create, run_enqueue
from experiments.training import hyperparameters as hp
from experiments.training.checkpoint_state import assert_no_pickles
from experiments.training.estimate import count_params, estimate
from experiments.training.runner import train_next_run
from finetune_hub.errors import Conflict, ServiceError
from finetune_hub.storage import artifact_path
from registry.models import RegisteredModel
from registry.services import version_register
from tests.support.training_helpers import FAST, make_experiment, make_version

# The preference examples (tests/support/data.py) pair "A clear answer i" with "meh i": a
# reward model
# tells them apart within a few steps at a high learning rate.
REWARD = {**FAST, "max_steps": 12, "eval_steps": 6, "save_steps": 6, "learning_rate": 2e-3}
GRPO = {
    **FAST,
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 8,
    "eval_steps": 2,
    "save_steps": 2,
    "learning_rate": 1e-3,
}


def series(run, key: str) -> list[float]:
    return list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step")
        .values_list("value", flat=True)
    )


def trained(experiment, owner) -> TrainingRun:
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    return run


def finished_reward_model(team, owner, tiny_model) -> TrainingRun:
    """A finished reward-model run without the training: the tiny model with a fresh score
    head saved as its output (the settings checks and the lineage need only the rows)."""
    from transformers import AutoModelForSequenceClassification

    version = make_version(team, owner, "preference", n=20)
    experiment = experiment_create(
        team=team,
        name=f"reward-{version.pk}",
        dataset_version=version,
        base_model=tiny_model,
        technique="reward",
        hyperparameters=FAST | {"rl_base": "full"},
        by=owner,
    )
    run = TrainingRun.objects.create(
        experiment=experiment, created_by=owner, status=TrainingRun.Status.SUCCEEDED
    )
    output = f"{run.folder}/final"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.save_pretrained(artifact_path(output))
    TrainingRun.objects.filter(pk=run.pk).update(output_path=output)
    run.refresh_from_db()
    return run


@pytest.fixture
def reward_run(team, owner, tiny_model):
    return finished_reward_model(team, owner, tiny_model)


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
# unseeded RNG (engine.load_model now seeds it from the run's seed).
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

    from experiments.training import engine, speed

    def head(seed: int, process_rng: int):
        params = hp.validate("reward", {"seed": seed}, context_length=None)
        experiment = SimpleNamespace(
            hyperparameters=params, technique="reward", base_model=tiny_model
        )
        torch.manual_seed(process_rng)  # whatever the process's RNG was before
        model, _ = engine.load_model(
            SimpleNamespace(experiment=experiment), speed.effective({}, technique_is_sft=False)
        )
        return model.score.weight.detach().clone()

    assert torch.equal(head(42, process_rng=1), head(42, process_rng=2))
    assert not torch.equal(head(42, process_rng=1), head(43, process_rng=1))


def test_a_reward_model_is_not_a_generator(team, owner, reward_run):
    with pytest.raises(Conflict, match="reward model"):
        Subject(Kind.RUN, run=reward_run.pk).for_team(team)
    model = RegisteredModel.objects.create(team=team, name="m", created_by=owner)
    with pytest.raises(Conflict, match="GRPO experiment's reward_run"):
        version_register(model=model, run=reward_run, by=owner)
    assert not TrainingRun.objects.generators().filter(pk=reward_run.pk).exists()
    assert TrainingRun.objects.with_output().filter(pk=reward_run.pk).exists()


def grpo_errors(team, owner, tiny_model, task="instruction", **params) -> list:
    version = make_version(team, owner, task)
    with pytest.raises(ServiceError) as caught:
        experiment_create(
            team=team,
            name="grpo",
            dataset_version=version,
            base_model=tiny_model,
            technique="grpo",
            hyperparameters={**GRPO, **params},
            by=owner,
        )
    assert 400 <= caught.value.status < 500
    return [(e.field, e.message) for e in caught.value.errors] or [(None, caught.value.detail)]


def test_grpo_settings_are_checked_before_queueing(team, owner, tiny_model, reward_run):
    [(field, message)] = grpo_errors(team, owner, tiny_model)
    assert field == "hyperparameters.reward_run" and "needs a reward model" in message
    [(field, message)] = grpo_errors(
        team, owner, tiny_model, reward_run=reward_run.pk, gpus=1, num_generations=3
    )
    assert field == "hyperparameters.num_generations" and "divide the batch of 4" in message
    [(field, message)] = grpo_errors(
        team, owner, tiny_model, reward_run=reward_run.pk, max_completion_length=128
    )
    assert field == "hyperparameters.max_completion_length" and "no room" in message
    [(field, message)] = grpo_errors(
        team, owner, tiny_model, reward_run=reward_run.pk, early_stopping_patience=2
    )
    assert field == "hyperparameters.early_stopping_patience"
    [(field, message)] = grpo_errors(
        team, owner, tiny_model, "classification", reward_run=reward_run.pk
    )
    assert field == "dataset_version" and "not classification" in message


def test_grpo_reward_run_must_be_a_finished_reward_model_of_the_team(
    team, owner, outsider, tiny_model, reward_run, cpu_worker
):
    from finetune_hub.models import Team

    # Another team's reward model is not found (its existence is not revealed).
    other = Team.objects.get(name="Other")
    theirs = finished_reward_model(other, outsider, tiny_model)
    [(field, message)] = grpo_errors(team, owner, tiny_model, reward_run=theirs.pk)
    assert field == "hyperparameters.reward_run" and message == f"No run {theirs.pk} in this team"
    # A run of another technique, and an unfinished reward model, are refused by name.
    lora = make_experiment(team, owner, tiny_model, "lora", "instruction")
    lora_run = run_enqueue(experiment=lora, by=owner, dispatch=False)
    [(field, message)] = grpo_errors(team, owner, tiny_model, reward_run=lora_run.pk)
    assert "is not a reward model (LoRA)" in message
    queued = run_enqueue(experiment=reward_run.experiment, by=owner, dispatch=False)
    [(field, message)] = grpo_errors(team, owner, tiny_model, reward_run=queued.pk)
    assert message == f"Run {queued.pk} has no trained reward model (queued)"
    # An id past what the database holds is refused by its field, not by the driver.
    [(field, message)] = grpo_errors(team, owner, tiny_model, reward_run=2**70)
    assert field == "hyperparameters.reward_run"
    # Only GRPO takes a reward model.
    with pytest.raises(ServiceError) as caught:
        hp.validate("lora", {"reward_run": reward_run.pk}, context_length=None)
    assert caught.value.errors[0].field == "hyperparameters.reward_run"


def test_reward_model_needs_preference_data(team, owner, tiny_model):
    with pytest.raises(ServiceError, match="needs a preference dataset"):
        make_experiment(team, owner, tiny_model, "reward", "instruction")


def test_grpo_fails_clearly_when_the_reward_model_is_gone(
    team, owner, tiny_model, reward_run, cpu_worker
):
    import shutil

    experiment = make_experiment(
        team, owner, tiny_model, "grpo", "instruction", reward_run=reward_run.pk, **GRPO
    )
    shutil.rmtree(artifact_path(reward_run.output_path))
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=owner).pk)
    assert run.status == TrainingRun.Status.FAILED
    assert f"The reward model (run {reward_run.pk}) is gone" in run.error


def test_estimates_count_the_score_head_the_reward_model_and_the_reference(tiny_model):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model)
    base = hp.Hyperparameters().model_dump()
    total = count_params(config)
    sft = estimate(config, technique="lora", hyperparameters={}, device="cpu")
    reward = estimate(config, technique="reward", hyperparameters={}, device="cpu")
    # A score head: one more row of trainable parameters, and no vocabulary-wide logits.
    assert reward.trainable_params == sft.trainable_params + config.hidden_size
    pairs = estimate(config, technique="dpo", hyperparameters={}, device="cpu")
    assert reward.activations_bytes < pairs.activations_bytes
    grpo = estimate(config, technique="grpo", hyperparameters={}, device="cpu")
    # The frozen reward model beside the policy (fp32 on CPU), no reference with LoRA.
    assert grpo.weights_bytes == sft.weights_bytes + total * 4
    full = {"rl_base": "full"}
    with_reference = estimate(config, technique="grpo", hyperparameters=full, device="cpu")
    without = estimate(
        config, technique="grpo", hyperparameters=full | {"kl_coef": 0.0}, device="cpu"
    )
    assert with_reference.weights_bytes - without.weights_bytes == total * 4
    bigger = estimate(
        config, technique="grpo", hyperparameters={}, device="cpu", reward_params=10 * total
    )
    assert bigger.weights_bytes - grpo.weights_bytes == 9 * total * 4
    assert base["kl_coef"] == 0.04 and base["num_generations"] == 4


def test_default_learning_rates_follow_what_is_trained():
    def lr(technique, **params):
        return hp.validate(
            technique,
            {"reward_run": 1} | params if technique == "grpo" else params,
            context_length=None,
        )["learning_rate"]

    assert lr("reward") == 1e-4 and lr("reward", rl_base="full") == 1e-5
    assert lr("grpo") == 1e-5 and lr("grpo", rl_base="full") == 1e-6
    assert lr("dpo") == 5e-6 and lr("dpo", dpo_base="full") == 5e-7


def test_api_estimate_and_create_name_the_reward_run_field(
    api, outsider_api, team, owner, outsider, tiny_model, reward_run
):
    version = make_version(team, owner, "instruction")
    body = {
        "base_model": tiny_model,
        "technique": "grpo",
        "hyperparameters": {**GRPO, "reward_run": reward_run.pk},
    }
    r = api.post("/api/experiments/estimate", body)
    assert r.status_code == 200, r.json()
    cuda = r.json()["estimate"]["cuda"]
    assert cuda["weights_bytes"] > 0 and r.json()["hyperparameters"]["kl_coef"] == 0.04
    # An outsider cannot even estimate with the team's reward model.
    r = outsider_api.post("/api/experiments/estimate", body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "hyperparameters.reward_run"
    r = api.post(
        "/api/experiments",
        {"team": team.pk, "name": "policy", "dataset_version": version.pk, **body},
    )
    assert r.status_code == 201, r.json()
    assert r.json()["hyperparameters"]["reward_run"] == reward_run.pk


def test_grpo_leaves_out_prompts_with_no_room_for_a_completion(tiny_model):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from experiments.training.engine import prompts_that_fit

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    short, long = "Name a colour.", " ".join(["word"] * 200)
    chat = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": text}]} for text in (short, long, short)]
    )
    params = {"max_length": 64, "max_completion_length": 16}  # 48 tokens for a prompt
    kept = prompts_that_fit(chat, tokenizer, params)
    assert [row["prompt"][0]["content"] for row in kept] == [short, short]
    plain = Dataset.from_list([{"prompt": long}, {"prompt": short}])
    assert [row["prompt"] for row in prompts_that_fit(plain, tokenizer, params)] == [short]
    # A prompt of exactly the room left fits; one token more does not.
    room = len(
        tokenizer.apply_chat_template(
            chat[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )
    exact = {"max_length": room + 16, "max_completion_length": 16}
    assert len(prompts_that_fit(chat.select([0]), tokenizer, exact)) == 1
    tight = {"max_length": room + 15, "max_completion_length": 16}
    assert len(prompts_that_fit(chat.select([0]), tokenizer, tight)) == 0
