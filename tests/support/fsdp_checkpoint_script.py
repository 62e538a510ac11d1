"""Run under torchrun (gloo, CPU) by tests/test_fsdp_checkpoint.py: a model sharded with FSDP2
(PyTorch's fully_shard, as accelerate applies it on GPUs) checkpointed and resumed through
SafetensorsCheckpointMixin's FSDP path: full state dicts, rank 0 writes safetensors, rank 0
reads them back and sends each rank its shard.

    python -m torch.distributed.run --nproc-per-node=N tests/support/fsdp_checkpoint_script.py \
        save|load FOLDER
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from experiments.training.checkpoint_state import SafetensorsCheckpointMixin

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class Trainer(SafetensorsCheckpointMixin):
    """What the mixin reads of a Trainer running FSDP with full state dicts."""

    def __init__(self, model, optimizer, scheduler):
        rank, world = dist.get_rank(), dist.get_world_size()
        self.model, self.optimizer, self.lr_scheduler = model, optimizer, scheduler
        self.is_fsdp_enabled, self.is_deepspeed_enabled = True, False
        plugin = SimpleNamespace(state_dict_type="StateDictType.FULL_STATE_DICT")
        self.accelerator = SimpleNamespace(
            state=SimpleNamespace(fsdp_plugin=plugin), unwrap_model=lambda m: m
        )
        self.args = SimpleNamespace(should_save=rank == 0, process_index=rank, world_size=world)


def sharded_model(seed: int):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.5, total_iters=10)
    return model, optimizer, scheduler


def step(model, optimizer, scheduler, seed: int) -> None:
    """One step on this rank's share of a global batch fixed by `seed` (whatever the number
    of ranks, the global batch is the same 4 rows)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (4, 12), generator=generator)
    share = ids.chunk(dist.get_world_size())[dist.get_rank()]
    # FSDP averages the ranks' gradients: each rank's mean loss over its equal share
    model(input_ids=share, labels=share).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def full_weights(model) -> dict:
    return {k: v.clone() for k, v in get_model_state_dict(model, options=FULL).items()}


def main(mode: str, folder: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if mode == "save":
        model, optimizer, scheduler = sharded_model(seed=0)
        for seed in range(3):
            step(model, optimizer, scheduler, seed)
        trainer = Trainer(model, optimizer, scheduler)
        weights = full_weights(model)  # what Trainer.save_model writes, with the files below
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            save_file(weights, folder / "model.safetensors")
        trainer._save_optimizer_and_scheduler(str(folder))
        step(model, optimizer, scheduler, seed=3)
        after = full_weights(model)
        if rank == 0:
            save_file(after, folder.parent / "after_step.safetensors")
    else:
        model, optimizer, scheduler = sharded_model(seed=1)  # other weights until loaded
        trainer = Trainer(model, optimizer, scheduler)
        trainer._load_from_checkpoint(str(folder))
        trainer._load_optimizer_and_scheduler(str(folder))
        weights = full_weights(model)
        state = get_optimizer_state_dict(model, optimizer, options=FULL)
        # copies: `step` is a CPU tensor the next optimizer step increments in place
        state = {n: {k: v.clone() for k, v in s.items()} for n, s in state.get("state", {}).items()}
        step(model, optimizer, scheduler, seed=3)
        after = full_weights(model)
        if rank == 0:
            saved = load_file(folder / "model.safetensors")
            assert weights.keys() == saved.keys()
            assert all(torch.equal(weights[k], saved[k]) for k in saved), "weights differ"
            from experiments.training.checkpoint_state import read_optimizer_state

            written = read_optimizer_state(folder)
            assert state.keys() == written["state"].keys()
            for name, values in written["state"].items():
                for key, tensor in values.items():
                    got = state[name][key]
                    assert torch.equal(got, tensor), (name, key, got, tensor)
            assert scheduler.last_epoch == 4, scheduler.last_epoch  # 3 saved + 1 step
            expected = load_file(folder.parent / "after_step.safetensors")
            worst = max((after[k] - expected[k]).abs().max().item() for k in expected)
            # The same step from the same state: equal but for the order of the gradient
            # sums (another number of ranks adds the shares in another order).
            assert worst < 1e-5, worst
            print(f"resumed on {dist.get_world_size()} ranks: step after resume off by {worst}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
