"""Pickle-free checkpoint state for Hugging Face Trainers.

transformers' Trainer writes optimizer.pt, scheduler.pt, scaler.pt, rng_state.pth and
training_args.bin with torch.save and reads them back with torch.load, i.e. pickle. The project
rule is "safetensors only, never unpickle an artifact", so this module stores the same state as
safetensors (tensors) plus JSON (everything else) and restores it with identical semantics.
"""

import json
import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

logger = logging.getLogger(__name__)

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_JSON = "scheduler.json"
RNG_TENSORS = "rng_state.safetensors"
RNG_JSON = "rng_state.json"
SCALER_JSON = "scaler.json"
TRAINING_ARGS_JSON = "training_args.json"

# JSON has no tuples (AdamW's betas is one) and cannot hold tensors: both are tagged so that
# loading rebuilds exactly the state_dict that was saved.
_TUPLE = "__tuple__"
_TENSOR = "__tensor__"

Folder = str | os.PathLike[str]


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` that replaces it only once fully written."""
    # A fixed per-process name rather than mkstemp: mkstemp creates 0600 files, and checkpoints
    # must stay readable by whoever else serves the artifacts (normal umask permissions).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=2))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with _atomic_path(path) as tmp:
        save_file(tensors, tmp)


def _child(path: str, key: str | int) -> str:
    return f"{path}/{key}" if path else str(key)


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor] | None) -> Any:
    """Make `value` JSON-ready; tensors go to `tensors` under `path` (refused when it is None)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor) and tensors is not None:
        # safetensors refuses non-contiguous tensors.
        tensors[path] = value.detach().contiguous()
        return {_TENSOR: path}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, _child(path, i), tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, _child(path, i), tensors) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _encode(v, _child(path, key), tensors) for key, v in value.items()}
    raise TypeError(
        f"checkpoint state {path or '<root>'!r} holds a {type(value).__name__}, which cannot be "
        "stored as JSON; refusing to fall back to pickle"
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if value.keys() == {_TUPLE}:
            return tuple(_decode(v, tensors) for v in value[_TUPLE])
        if value.keys() == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {key: _decode(v, tensors) for key, v in value.items()}
    return value


def _save_state(folder: Folder, name: str, state: dict[str, Any]) -> None:
    _write_json(Path(folder, name), _encode(state, "", None))


def _load_state(folder: Folder, name: str) -> dict[str, Any]:
    return _decode(json.loads(Path(folder, name).read_text(encoding="utf-8")), {})


def save_optimizer(optimizer: Optimizer, folder: Folder) -> None:
    save_optimizer_state(optimizer.state_dict(), folder)


def save_optimizer_state(state_dict: dict[str, Any], folder: Folder) -> None:
    """An optimizer state dict keyed by parameter index (one process, DDP) or by parameter
    name (the full state dict FSDP gathers): the key kind is recorded, so loading rebuilds
    the same keys."""
    by_name = any(isinstance(key, str) for key in state_dict["state"])
    # JSON object keys must be strings.
    state = {str(key): values for key, values in state_dict["state"].items()}
    tensors: dict[str, torch.Tensor] = {}
    payload = _encode({"state": state, "param_groups": state_dict["param_groups"]}, "", tensors)
    payload["keys"] = "name" if by_name else "index"
    _write_tensors(Path(folder, OPTIMIZER_TENSORS), tensors)
    _write_json(Path(folder, OPTIMIZER_JSON), payload)


def read_optimizer_state(folder: Folder) -> dict[str, Any]:
    # On CPU like Trainer does for one process: load_state_dict moves each state tensor to
    # its param's device and dtype (keeping `step` on CPU unless capturable/fused).
    tensors = load_file(Path(folder, OPTIMIZER_TENSORS), device="cpu")
    payload = json.loads(Path(folder, OPTIMIZER_JSON).read_text(encoding="utf-8"))
    by_name = payload.pop("keys", "index") == "name"
    state_dict = _decode(payload, tensors)
    state = {(key if by_name else int(key)): values for key, values in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def load_optimizer(optimizer: Optimizer, folder: Folder) -> None:
    optimizer.load_state_dict(read_optimizer_state(folder))


def read_model_weights(folder: Folder) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights as save_pretrained wrote them (one file or shards)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(folder / Path(shard).name, device="cpu"))
    return weights


def save_scheduler(scheduler: LRScheduler, folder: Folder) -> None:
    _save_state(folder, SCHEDULER_JSON, scheduler.state_dict())


def load_scheduler(scheduler: LRScheduler, folder: Folder) -> None:
    scheduler.load_state_dict(_load_state(folder, SCHEDULER_JSON))


def save_scaler(scaler: torch.amp.GradScaler | None, folder: Folder) -> None:
    if scaler is not None:
        _save_state(folder, SCALER_JSON, scaler.state_dict())


def load_scaler(scaler: torch.amp.GradScaler | None, folder: Folder) -> None:
    if scaler is not None and Path(folder, SCALER_JSON).is_file():
        scaler.load_state_dict(_load_state(folder, SCALER_JSON))


def save_rng(
    folder: Folder, include_cuda: bool, names: tuple[str, str] = (RNG_TENSORS, RNG_JSON)
) -> None:
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors = {
        "torch_cpu": torch.get_rng_state(),
        # uint32 MT19937 keys widened to int64: exact, and every safetensors reader supports it.
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
    }
    cuda_states = (
        torch.cuda.get_rng_state_all() if include_cuda and torch.cuda.is_available() else []
    )
    tensors.update({f"cuda/{device}": state for device, state in enumerate(cuda_states)})
    _write_tensors(Path(folder, names[0]), tensors)
    _write_json(
        Path(folder, names[1]),
        {
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
            "numpy": {
                "bit_generator": bit_generator,
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
            "cuda_devices": len(cuda_states),
        },
    )


def load_rng(folder: Folder, names: tuple[str, str] = (RNG_TENSORS, RNG_JSON)) -> None:
    tensors = load_file(Path(folder, names[0]), device="cpu")
    meta = json.loads(Path(folder, names[1]).read_text(encoding="utf-8"))
    python = meta["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (numpy["bit_generator"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    )
    torch.set_rng_state(tensors["torch_cpu"])
    _load_cuda_rng([tensors[f"cuda/{device}"] for device in range(meta["cuda_devices"])])


def _load_cuda_rng(states: list[torch.Tensor]) -> None:
    if not states:
        return
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(states):
        # Same as Trainer: resuming on different hardware works, only exact replay is lost.
        logger.warning("CUDA RNG state saved for %d device(s) not restored here", len(states))
        return
    torch.cuda.set_rng_state_all(states)


class SafetensorsCheckpointMixin:
    """Put before a Trainer subclass: `class T(SafetensorsCheckpointMixin, SFTTrainer)`.

    Replaces Trainer's pickled optimizer/scheduler/scaler/RNG/training-args files by the
    safetensors + JSON files of this module. Model weights need nothing: transformers v5 always
    saves them as safetensors (TrainingArguments has no save_safetensors switch any more).
    """

    def _check_supported(self) -> None:
        if self.is_deepspeed_enabled:
            # Sharded optimizer state would need gathering before it is written.
            raise NotImplementedError(
                "SafetensorsCheckpointMixin supports one process, data parallel (DDP) and FSDP "
                "with full state dicts, not DeepSpeed"
            )
        if self.is_fsdp_enabled:
            kind = str(self.accelerator.state.fsdp_plugin.state_dict_type)
            if "FULL_STATE_DICT" not in kind:
                raise NotImplementedError(f"FSDP checkpoints here are full state dicts, not {kind}")

    def _full_state_options(self, **options):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **options)

    def _rng_names(self) -> tuple[str, str]:
        """Each rank's RNG files under data parallel (ranks draw different dropout masks),
        the plain names for one process."""
        if self.args.world_size <= 1:
            return RNG_TENSORS, RNG_JSON
        suffix = f"_{self.args.process_index}"
        return tuple(name.replace(".", f"{suffix}.", 1) for name in (RNG_TENSORS, RNG_JSON))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        self._check_supported()
        if self.is_fsdp_enabled:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            # A collective: each rank gives its shard, rank 0 gets the whole state on CPU,
            # keyed by parameter name (it resumes on any number of GPUs).
            state = get_optimizer_state_dict(
                self.model, self.optimizer, options=self._full_state_options(cpu_offload=True)
            )
            if self.args.should_save:
                save_optimizer_state(state, output_dir)
                save_scheduler(self.lr_scheduler, output_dir)
            return
        if self.args.should_save:
            save_optimizer(self.optimizer, output_dir)
            save_scheduler(self.lr_scheduler, output_dir)

    def _save_scaler(self, output_dir: str) -> None:
        self._check_supported()
        if self.args.should_save:
            save_scaler(getattr(self.accelerator, "scaler", None), output_dir)

    def _save_rng_state(self, output_dir: str) -> None:
        self._check_supported()
        os.makedirs(output_dir, exist_ok=True)
        save_rng(output_dir, include_cuda=True, names=self._rng_names())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        self._check_supported()
        names = (OPTIMIZER_TENSORS, OPTIMIZER_JSON, SCHEDULER_JSON)
        if not all(Path(checkpoint, name).is_file() for name in names):
            # Louder than Trainer's silence: a legacy *.pt checkpoint lands here and would
            # otherwise resume with a fresh optimizer unnoticed.
            logger.warning(
                "No safetensors optimizer/scheduler state in %s, not restoring it", checkpoint
            )
            return
        if self.is_fsdp_enabled:
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            # Rank 0 reads the whole state and sends each rank its shard.
            state = read_optimizer_state(checkpoint) if self.args.process_index == 0 else {}
            set_optimizer_state_dict(
                self.model,
                self.optimizer,
                optim_state_dict=state,
                options=self._full_state_options(broadcast_from_rank0=True),
            )
        else:
            load_optimizer(self.optimizer, checkpoint)
        load_scheduler(self.lr_scheduler, checkpoint)

    def _load_scaler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        self._check_supported()
        load_scaler(getattr(self.accelerator, "scaler", None), checkpoint)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        self._check_supported()
        names = self._rng_names()
        if not all(Path(checkpoint, name).is_file() for name in names):
            # Also a resume on another number of processes: training goes on, only the
            # exact replay of dropout masks and sampling is lost (as with Trainer's files).
            logger.info("No RNG state %s in %s, replay is not exact", names[0], checkpoint)
            return
        load_rng(checkpoint, names=names)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        # Trainer would read FSDP's pickled pytorch_model_fsdp.bin; the checkpoint holds the
        # full weights as safetensors (save_pretrained's files), which rank 0 reads and sends
        # each rank its shard of.
        self._check_supported()
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        model = model if model is not None else self.model
        weights = read_model_weights(resume_from_checkpoint) if self.args.process_index == 0 else {}
        options = self._full_state_options(broadcast_from_rank0=True, strict=False)
        result = set_model_state_dict(model, weights, options=options)
        tied = getattr(self.accelerator.unwrap_model(model), "_tied_weights_keys", None) or ()
        missing = [key for key in result.missing_keys if key not in tied]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"checkpoint {Path(resume_from_checkpoint).name} does not match the model: "
                f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )

    def _load_best_model(self) -> None:
        if not self.is_fsdp_enabled:
            return super()._load_best_model()
        logger.info("Loading the best checkpoint %s", self.state.best_model_checkpoint)
        self._load_from_checkpoint(self.state.best_model_checkpoint, self.model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        _write_text(folder / TRAINING_ARGS_JSON, self.args.to_json_string())
        # Trainer pickles the TrainingArguments unconditionally; drop that file straight away.
        (folder / "training_args.bin").unlink(missing_ok=True)
