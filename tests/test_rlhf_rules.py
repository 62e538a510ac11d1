"""The RLHF rules checked without training: a reward model is no generator, GRPO settings and
its reward run are checked before queueing, estimates count the score head, the reward model
and the reference, default learning rates, and the API names the reward_run field."""

import pytest

from evaluation.subjects import Kind, Subject
from experiments.models import TrainingRun
from experiments.services import experiment_create, run_enqueue
from experiments.training import hyperparameters as hp
from experiments.training.estimate import count_params, estimate
from experiments.training.runner import train_next_run
from finetune_hub.errors import Conflict, ServiceError
from finetune_hub.storage import artifact_path
from registry.models import RegisteredModel
from registry.services import version_register
from tests.support.rlhf import GRPO, finished_reward_model
from tests.support.training_helpers import make_experiment, make_version

pytestmark = pytest.mark.django_db(transaction=True)


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

    from experiments.training.data import prompts_that_fit

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
