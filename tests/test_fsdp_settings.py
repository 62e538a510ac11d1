"""FSDP for full fine-tuning across a run's GPUs: which runs may ask for it, what it costs
each GPU, where it runs, and the Trainer arguments it becomes. Its checkpoints are tested in
test_fsdp_checkpoint.py; its training on GPUs is measured by bench/scale_out.py."""

from types import SimpleNamespace

import pytest

from experiments.services import run_enqueue
from experiments.training import hyperparameters as hp
from experiments.training import loading, speed, trainer
from experiments.training.estimate import estimate
from finetune_hub.errors import Conflict, ServiceError
from inference.base_models import load_config
from tests.support.training_helpers import make_experiment


def field_error(technique: str, **params) -> tuple[str, str]:
    with pytest.raises(ServiceError) as caught:
        hp.validate(technique, params, context_length=None)
    assert caught.value.status == 422
    [error] = caught.value.errors
    return error.field, error.message


def test_fsdp_is_for_full_fine_tuning_on_several_gpus():
    field, message = field_error("lora", fsdp=True, gpus=2)
    assert field == "hyperparameters.fsdp" and "technique full" in message
    field, message = field_error("dpo", fsdp=True, gpus=2, dpo_base="full")
    assert field == "hyperparameters.fsdp"
    field, message = field_error("full", fsdp=True)  # gpus defaults to 1
    assert field == "hyperparameters.fsdp" and "gpus to 2 or more" in message
    assert hp.validate("full", {"fsdp": True, "gpus": 2}, context_length=None)["fsdp"] is True
    assert hp.validate("full", {}, context_length=None)["fsdp"] is False


def test_fsdp_splits_what_a_full_fine_tune_holds_across_the_gpus(tiny_model):
    config = load_config(tiny_model)
    ddp = estimate(config, technique="full", hyperparameters={"gpus": 4})
    sharded = estimate(config, technique="full", hyperparameters={"gpus": 4, "fsdp": True})
    assert sharded.sharded and not ddp.sharded
    assert sharded.gradients_bytes * 4 == ddp.gradients_bytes
    assert sharded.optimizer_bytes * 4 == ddp.optimizer_bytes
    # a quarter of the weights plus one layer gathered whole at a time
    assert ddp.weights_bytes // 4 < sharded.weights_bytes < ddp.weights_bytes // 2
    assert sharded.total_bytes < ddp.total_bytes
    assert sharded.needs_cuda and not ddp.needs_cuda  # PyTorch's FSDP2 on NCCL GPUs


def test_an_fsdp_run_waits_for_a_cuda_worker(team, owner, tiny_model, cpu_worker):
    experiment = make_experiment(team, owner, tiny_model, "full", fsdp=True, gpus=2)
    with pytest.raises(Conflict) as caught:
        run_enqueue(experiment=experiment, by=owner, dispatch=False)
    assert "needs a CUDA GPU" in caught.value.detail


def fsdp_run(tiny_model, **params):
    settings = hp.validate("full", {"fsdp": True, "gpus": 2, **params}, context_length=None)
    experiment = SimpleNamespace(hyperparameters=settings, technique="full", base_model=tiny_model)
    return SimpleNamespace(experiment=experiment)


def test_fsdp_becomes_trainer_arguments(tiny_model, tmp_path):
    run = fsdp_run(tiny_model, gradient_checkpointing=True)
    args = trainer.common_args(
        run, tmp_path, has_eval=False, fast=speed.effective({}, technique_is_sft=True)
    )
    assert args["fsdp"] == "full_shard auto_wrap"
    assert args["fsdp_config"] == {
        "version": 2,
        "reshard_after_forward": True,
        "activation_checkpointing": True,  # FSDP's own, not the Trainer's as well
        "state_dict_type": "FULL_STATE_DICT",  # what the safetensors checkpoints are made of
    }
    assert args["gradient_checkpointing"] is False and args["bf16"] is False
    plain = fsdp_run(tiny_model)
    plain.experiment.hyperparameters["fsdp"] = False
    assert "fsdp" not in trainer.common_args(
        plain, tmp_path, False, speed.effective({}, technique_is_sft=True)
    )


def test_a_cpu_worker_refuses_fsdp_before_loading_weights(tiny_model):
    with pytest.raises(ServiceError) as caught:
        loading.load_model(fsdp_run(tiny_model), speed.effective({}, technique_is_sft=True))
    assert caught.value.status == 409
    assert caught.value.detail == "FSDP needs a CUDA GPU; this worker has CPU only"


def test_mfu_counts_every_gpu_the_tokens_were_trained_on():
    one = speed.mfu(8_000_000_000, 10_000, "NVIDIA H200")
    assert speed.mfu(8_000_000_000, 20_000, "NVIDIA H200", gpus=2) == pytest.approx(one)
