"""Peak training memory against the resource estimate, through the project's own engine
(experiment_create -> run -> supervised training process), on a random-init model built from
a config. Weights are never downloaded: the model is created and saved locally first.

    python bench/train_memory.py --shape llama-3.1-8b --techniques lora,qlora --steps 30
    python bench/train_memory.py --shape tiny --techniques lora,full --steps 10   # any machine

Prints one Markdown table row per technique for bench/RESULTS.md.
"""

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import SHAPES  # noqa: E402 (after the path is set)

WORDS = "order refund parcel account login invoice screen battery delivery coupon".split()


def build_model(shape: str, tokenizer_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPES[shape]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    return out


def synthetic_jsonl(n: int, words: int) -> bytes:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        lines.append(
            json.dumps(
                {
                    "instruction": f"Summarise ticket {i}.",
                    "input": text,
                    "output": " ".join(text.split()[: words // 4]),
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--techniques", default="lora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tokenizer", default=str(ROOT / "var/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--workdir", default=tempfile.mkdtemp(prefix="fth-bench-"))
    args = parser.parse_args()

    work = Path(args.workdir)
    model_dir = build_model(args.shape, Path(args.tokenizer), work / "models" / args.shape)
    os.environ.update(
        FINETUNE_HUB_VAR=str(work / "var"),
        ARTIFACT_ROOT=str(work / "artifacts"),
        BASE_MODEL_DIRS=str(work / "models"),
        DEFAULT_BASE_MODEL=str(model_dir),
        DJANGO_SETTINGS_MODULE="finetune_hub.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    rows = [run_technique(t, model_dir, args) for t in args.techniques.split(",")]
    print(f"\n{' '.join(sys.argv)}  on {describe_machine()}\n")
    print(
        "| shape | technique | steps | batch x tokens | estimate (GB) | peak allocated (GB) "
        "| peak / estimate | s/step |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    shutil.rmtree(work / "artifacts", ignore_errors=True)


def run_technique(technique: str, model_dir: Path, args) -> list:
    from django.contrib.auth import get_user_model

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_version_upload
    from experiments.models import TrainingRun
    from experiments.training.runner import train_next_run
    from experiments.training.services import experiment_create, run_enqueue
    from finetune_hub.models import Membership, Team

    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(name="bench")
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "admin"})
    dataset = Dataset.objects.create(
        team=team, name=f"d-{technique}-{time.time()}", task="instruction", created_by=user
    )
    # Examples near max_length, so activations match the estimate's assumption.
    version = dataset_version_upload(
        dataset=dataset,
        filename="b.jsonl",
        by=user,
        data=synthetic_jsonl(400, int(args.max_length * 0.35)),
        max_length=args.max_length,
        base_model=str(model_dir),
    )
    params = {
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "max_length": args.max_length,
        "save_steps": 10_000,
        "eval_steps": 10_000,
        "logging_steps": 5,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    experiment = experiment_create(
        team=team,
        name=f"e-{technique}-{time.time()}",
        dataset_version=version,
        base_model=str(model_dir),
        technique=technique,
        hyperparameters=params,
        by=user,
    )
    from experiments.training.workers import worker_heartbeat

    worker = worker_heartbeat()
    device = "cuda" if worker.cuda else "cpu"
    started = time.monotonic()
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=user).pk)
    elapsed = time.monotonic() - started
    if run.status != TrainingRun.Status.SUCCEEDED:
        print(run.error, file=sys.stderr)
    estimate = experiment.estimate[device]["total_bytes"] / 1e9
    peak = (run.peak_memory_bytes or 0) / 1e9
    return [
        args.shape,
        technique + (" + gradient checkpointing" if args.gradient_checkpointing else ""),
        run.step,
        f"{args.batch} x {args.max_length}",
        f"{estimate:.1f}",
        f"{peak:.1f}" if peak else "n/a (CPU)",
        f"{peak / estimate:.2f}" if peak else "n/a",
        f"{elapsed / max(run.step, 1):.2f}",
    ]


def describe_machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
