"""Pickle-free checkpoint state: exact resume for a plain torch loop and for a real Trainer.

No database needed: conftest's autouse `isolated_artifacts` only touches Django settings.
"""

import functools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from experiments.training.checkpoint_state import (
    SafetensorsCheckpointMixin,
    load_optimizer,
    load_rng,
    load_scaler,
    load_scheduler,
    save_optimizer,
    save_rng,
    save_scaler,
    save_scheduler,
)
from finetune_hub.storage import assert_no_pickles


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup)


def _setup(seed: int) -> tuple[nn.Module, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}],
        lr=1e-2,
    )
    # A plain lambda is saved as None, a partial as its __dict__: both LambdaLR cases.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda step: 0.9**step, functools.partial(_warmup, warmup=4)]
    )
    return model, optimizer, scheduler


def _train(model: nn.Module, optimizer, scheduler, steps: int) -> None:
    model.train()
    for _ in range(steps):
        # Draw from all three global RNGs so that a missed restore shows in the weights.
        x = torch.randn(4, 8) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def _save_all(model, optimizer, scheduler, folder: Path) -> None:
    save_file(model.state_dict(), folder / "model.safetensors")
    save_optimizer(optimizer, folder)
    save_scheduler(scheduler, folder)
    save_rng(folder, include_cuda=True)


def _assert_same(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.device, a.shape) == (b.dtype, b.device, b.shape)
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def test_plain_loop_resumes_exactly(tmp_path):
    random.seed(0)
    np.random.seed(0)
    model, optimizer, scheduler = _setup(seed=0)
    _train(model, optimizer, scheduler, 3)
    _save_all(model, optimizer, scheduler, tmp_path)
    _train(model, optimizer, scheduler, 3)
    expected = model.state_dict()

    model, optimizer, scheduler = _setup(seed=1)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    load_optimizer(optimizer, tmp_path)
    load_scheduler(scheduler, tmp_path)
    load_rng(tmp_path)
    _train(model, optimizer, scheduler, 3)

    _assert_same(model.state_dict(), expected)
    assert_no_pickles(tmp_path)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng_state.json",
        "rng_state.safetensors",
        "scheduler.json",
    ]


def test_optimizer_and_scheduler_state_dicts_round_trip(tmp_path):
    model, optimizer, scheduler = _setup(seed=0)
    _train(model, optimizer, scheduler, 2)
    save_optimizer(optimizer, tmp_path)
    save_scheduler(scheduler, tmp_path)

    _, fresh_optimizer, fresh_scheduler = _setup(seed=1)
    load_optimizer(fresh_optimizer, tmp_path)
    load_scheduler(fresh_scheduler, tmp_path)

    _assert_same(fresh_optimizer.state_dict(), optimizer.state_dict())
    assert fresh_optimizer.state_dict()["state"][0]["step"].dtype == torch.float32
    assert "state/0/exp_avg" in load_file(tmp_path / "optimizer.safetensors")
    assert fresh_optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    _assert_same(fresh_scheduler.state_dict(), scheduler.state_dict())


def test_scheduler_refuses_values_json_cannot_hold(tmp_path):
    class TensorLambda:
        def __init__(self) -> None:
            self.factor = torch.tensor(0.5)

        def __call__(self, step: int) -> float:
            return float(self.factor)

    _, optimizer, _ = _setup(seed=0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, TensorLambda())
    with pytest.raises(TypeError, match="lr_lambdas/0/factor.*Tensor"):
        save_scheduler(scheduler, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _draw() -> tuple[float, ...]:
    return (
        random.random(),
        random.gauss(0, 1),
        *np.random.rand(3).tolist(),
        float(np.random.randn()),
        *torch.rand(3).tolist(),
    )


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    # Leave a cached Gaussian in python's and numpy's state so those fields matter too.
    random.gauss(0, 1)
    np.random.standard_normal()
    save_rng(tmp_path, include_cuda=True)
    expected = _draw()

    random.seed(2)
    np.random.seed(2)
    torch.manual_seed(2)
    load_rng(tmp_path)

    assert _draw() == expected


def test_scaler_round_trip(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    save_scaler(scaler, tmp_path)
    fresh = torch.amp.GradScaler("cpu")
    load_scaler(fresh, tmp_path)
    assert fresh.state_dict() == scaler.state_dict()

    save_scaler(None, tmp_path / "missing")  # no scaler: nothing written, nothing raised
    load_scaler(fresh, tmp_path / "missing")
    assert fresh.state_dict() == scaler.state_dict()


def test_assert_no_pickles_names_the_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert_no_pickles(tmp_path)
    (tmp_path / "sub" / "optimizer.pt").write_bytes(b"")
    (tmp_path / "training_args.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"sub/optimizer\.pt, training_args\.bin$") as caught:
        assert_no_pickles(tmp_path)
    assert str(tmp_path) not in str(caught.value)  # the message reaches users: no server path


class SafeTrainer(SafetensorsCheckpointMixin, Trainer):
    pass


class RandomTokens(torch.utils.data.Dataset):
    # 8 rows at batch size 2: 4 steps per epoch, so resuming at step 3 lands mid-epoch and the
    # resumed run then crosses into a reshuffled second epoch.
    def __init__(self) -> None:
        self.ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


class StopAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        control.should_training_stop = True
        return control


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        # Dropout makes the resumed run depend on the restored torch RNG.
        attention_dropout=0.2,
    )
    return LlamaForCausalLM(config)


def _trainer(output_dir: Path, callbacks: list[TrainerCallback] | None = None) -> SafeTrainer:
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=6,
        save_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        seed=42,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
    )
    return SafeTrainer(
        model=_tiny_llama(), args=args, train_dataset=RandomTokens(), callbacks=callbacks
    )


def test_trainer_resume_is_pickle_free_and_exact(tmp_path):
    uninterrupted = _trainer(tmp_path / "a")
    uninterrupted.train()

    _trainer(tmp_path / "b", callbacks=[StopAfterFirstSave()]).train()
    checkpoint = tmp_path / "b" / "checkpoint-3"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-3"]
    resumed = _trainer(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(checkpoint))

    for folder in [*(tmp_path / "a").glob("checkpoint-*"), *(tmp_path / "b").glob("checkpoint-*")]:
        assert_no_pickles(folder)
    assert {p.name for p in checkpoint.iterdir()} >= {
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "rng_state.safetensors",
        "rng_state.json",
        "trainer_state.json",
        "training_args.json",
    }
    assert uninterrupted.state.global_step == resumed.state.global_step == 6
    initial = _tiny_llama().state_dict()
    final_a, final_b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert not torch.equal(final_a["lm_head.weight"], initial["lm_head.weight"])
    for name, tensor in final_a.items():
        assert torch.equal(tensor, final_b[name]), name
