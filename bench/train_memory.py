"""Peak training memory against the resource estimate, and real tokens/s, through the
project's own engine (experiment_create -> queued run -> supervised training process), on a
random-init model built from a config. Weights are never downloaded: the model is created and
saved locally first; with --prequantized (always for the 70B shape) it is written layer by
layer as a pre-quantized NF4 checkpoint (bench/nf4_model.py), which the queued QLoRA run
loads like any local base model.

    python bench/train_memory.py --shape llama-3.1-8b --techniques lora,qlora --steps 30
    python bench/train_memory.py --shape llama-3.1-70b --techniques qlora --steps 20 \\
        --batch 4 --gradient-checkpointing --json out/gpu_table.json --cleanup
    python bench/train_memory.py --shape tiny --techniques lora,full --steps 10   # any machine

Prints phase timings as it goes and one Markdown table row per technique for
bench/RESULTS.md; --json PATH appends rows to a JSON file ({"rows": [...]}, the layout of
bench/results/gpu_table.json). Real tokens/s is the run's own `tokens_per_second` metric
(non-padding tokens, reporting.py), weighted by the time each logging interval took, without
the first interval (model load, evaluation at start, warm-up).
"""

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import SHAPES  # noqa: E402 (after the path is set)

WORDS = "order refund parcel account login invoice screen battery delivery coupon".split()
GIB = 2**30
# Written pre-quantized whatever the flag: 141 GB in bf16 fits neither the GPU machine's disk
# (64 GiB) nor its memory (128 GiB).
ALWAYS_PREQUANTIZED = {"llama-3.1-70b", "70b"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_cuda() -> None:
    """This process only builds models: the training process must find the GPU empty."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_model(shape: str, tokenizer_dir: Path, out: Path, prequantized: bool = False) -> Path:
    if (out / "config.json").exists():
        return out
    if prequantized:
        from bench import nf4_model

        return nf4_model.build(shape, tokenizer_dir, out)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPES[shape]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in bf16 on the GPU: no fp32 copy (53 GB for 13B)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    free_cuda()
    return out


def synthetic_records(n: int, words: int) -> list[dict]:
    rng = random.Random(0)
    records = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        records.append(
            {
                "instruction": f"Summarise ticket {i}.",
                "input": text,
                "output": " ".join(text.split()[: words // 4]),
            }
        )
    return records


def synthetic_jsonl(n: int, words: int) -> bytes:
    return ("\n".join(json.dumps(r) for r in synthetic_records(n, words)) + "\n").encode()


def tokens_of(tokenizer, record: dict) -> int:
    """An example's length as training sees it: the chat template over its messages."""
    from datasets_app import formats

    messages = formats.to_messages("instruction", record)
    return len(
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )


def filling_words(tokenizer_dir: Path, max_length: int, fill: float = 0.95) -> tuple[int, int]:
    """Words per example so that the longest of a sample is about `fill` x max_length tokens
    (a packed row then holds one example with little room left, as the estimate assumes):
    (words, tokens of the longest). Measured with the model's tokenizer, not guessed."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    target, words = int(fill * max_length), max(4, max_length // 3)
    for _ in range(6):
        longest = max(tokens_of(tokenizer, r) for r in synthetic_records(20, words))
        if abs(longest - target) <= max(2, target // 100):
            break
        words = max(4, int(words * target / longest))
    longest = max(tokens_of(tokenizer, r) for r in synthetic_records(400, words))
    while longest > max_length and words > 4:
        words -= max(1, words // 50)
        longest = max(tokens_of(tokenizer, r) for r in synthetic_records(400, words))
    return words, longest


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sha256_rate() -> float:
    """Bytes/s of the SHA-256 the run's base-model record uses (storage.file_sha256: 1 MB
    reads): a local base model's weight files are hashed by every training process."""
    chunk, digest = os.urandom(1 << 20), hashlib.sha256()
    started = time.perf_counter()
    for _ in range(512):
        digest.update(chunk)
    return 512 * len(chunk) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--techniques", default="lora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--prequantized",
        action="store_true",
        help="write the model as a pre-quantized NF4 checkpoint (QLoRA only; always for 70B)",
    )
    parser.add_argument("--tokenizer", default=str(ROOT / "var/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", help="append one row per technique to this JSON file")
    parser.add_argument("--logs", help="copy each run's train.log into this folder")
    parser.add_argument(
        "--cleanup", action="store_true", help="delete the built model folder at the end"
    )
    parser.add_argument(
        "--refresh-estimates",
        metavar="JSON",
        help="recompute estimate_gib and peak_over_estimate of every row of this file with "
        "the engine's current estimate (no GPU, no training), and exit",
    )
    args = parser.parse_args()
    if args.refresh_estimates:
        refresh_estimates(Path(args.refresh_estimates))
        return
    prequantized = args.prequantized or args.shape in ALWAYS_PREQUANTIZED
    techniques = args.techniques.split(",")
    if prequantized and set(techniques) != {"qlora"}:
        parser.error(
            "a pre-quantized (NF4) base trains with QLoRA only: the checkpoint loads in 4 bits "
            f"whatever the technique; got {args.techniques}"
        )

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fth-bench-"))
    name = args.shape + ("-nf4" if prequantized else "")
    started = time.monotonic()
    log(f"build {name} in {work / 'models' / name}")
    model_dir = build_model(
        args.shape, Path(args.tokenizer), work / "models" / name, prequantized=prequantized
    )
    free_cuda()
    build_s = time.monotonic() - started
    model_bytes = folder_bytes(model_dir)
    rate = sha256_rate()
    log(
        f"built in {build_s:.0f} s: {model_bytes / 1e9:.1f} GB on disk; SHA-256 here "
        f"{rate / 1e9:.2f} GB/s, so the run's base-model record hashes it in about "
        f"{model_bytes / rate:.0f} s"
    )
    setup_django(work, model_dir)
    rows = []
    for technique in techniques:
        log(f"run {technique} on {name}")
        rows.append(run_technique(technique, model_dir, args))
        row = rows[-1]
        log(
            f"{technique}: {row['status']} at step {row['steps']} in {row['wall_s']:.0f} s; "
            f"peak {row['peak_memory_gib']} GiB against {row['estimate_gib']} GiB estimated; "
            f"{row['real_tokens_per_s']} real tokens/s"
        )
    machine = describe_machine()
    command = " ".join(sys.argv)
    for row in rows:
        row.update(
            prequantized=prequantized,
            model_gb_on_disk=round(model_bytes / 1e9, 2),
            build_s=round(build_s, 1),
            machine=machine,
            command=command,
            date=datetime.now(UTC).strftime("%Y-%m-%d"),
            **versions(),
        )
    print(f"\n{command}  on {machine}\n")
    print(
        "| shape | technique | steps | batch x tokens | estimate (GB) | peak allocated (GB) "
        "| peak / estimate | wall s/step (with model load) | real tokens/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in markdown_row(row)) + " |", flush=True)
    if args.json:
        append_rows(Path(args.json), rows)
        log(f"appended {len(rows)} row(s) to {args.json}")
    shutil.rmtree(work / "artifacts", ignore_errors=True)
    if args.cleanup:
        shutil.rmtree(model_dir, ignore_errors=True)
        log(f"deleted {model_dir} ({model_bytes / 1e9:.1f} GB)")
    log(f"done in {time.monotonic() - started:.0f} s")


def row_estimate_bytes(row: dict) -> int:
    """The engine's estimate for a row's run: its shape's config and the hyperparameters the
    run was queued with (run_technique's, over the technique's defaults)."""
    from transformers import LlamaConfig

    from experiments.training import hyperparameters as hp
    from experiments.training.estimate import estimate

    params = hp.validate(
        row["technique"],
        {
            "per_device_train_batch_size": row["batch"],
            "max_length": row["max_length"],
            "gradient_checkpointing": row["gradient_checkpointing"],
        },
        context_length=None,
    )
    config = LlamaConfig(**SHAPES[row["shape"]])
    return estimate(config, technique=row["technique"], hyperparameters=params).total_bytes


def refresh_estimates(path: Path) -> None:
    """Each row's estimate_gib from the current estimate; the figure the run was queued with
    stays in estimate_gib_at_run (set here once, from the old estimate_gib, if missing)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
    import django

    django.setup()
    data = json.loads(path.read_text())
    for row in data["rows"]:
        row.setdefault("estimate_gib_at_run", row["estimate_gib"])
        now = row_estimate_bytes(row)
        row["estimate_gib"] = round(now / GIB, 2)
        if row.get("peak_memory_gib"):
            row["peak_over_estimate"] = round(row["peak_memory_gib"] * GIB / now, 3)
        log(f"{row['shape']} {row['technique']}: estimate {row['estimate_gib']} GiB")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def setup_django(work: Path, model_dir: Path) -> None:
    """The project in this process, as a worker: its state, artifacts and allowed base models
    under `work`, the database migrated."""
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


def bench_team():
    """The bench user and its team (an admin of it): (team, user)."""
    from django.contrib.auth import get_user_model

    from finetune_hub.models import Membership, Team

    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(name="bench")
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "admin"})
    return team, user


def markdown_row(row: dict) -> list:
    estimate, peak = row["estimate_gib"] * GIB / 1e9, (row["peak_memory_gib"] or 0) * GIB / 1e9
    technique = row["technique"]
    technique += " (pre-quantized NF4)" if row.get("prequantized") else ""
    technique += " + gradient checkpointing" if row["gradient_checkpointing"] else ""
    return [
        row["shape"],
        technique,
        row["steps"],
        f"{row['batch']} x {row['max_length']}",
        f"{estimate:.1f}",
        f"{peak:.1f}" if peak else "n/a (CPU)",
        f"{peak / estimate:.2f}" if peak else "n/a",
        f"{row['wall_s'] / max(row['steps'], 1):.2f}",
        row["real_tokens_per_s"] if row["real_tokens_per_s"] is not None else "n/a",
    ]


def append_rows(path: Path, rows: list[dict]) -> None:
    data = {"rows": []}
    if path.exists():
        old = json.loads(path.read_text())
        data = old if isinstance(old, dict) else {"rows": old}
    data.setdefault("rows", []).extend(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def real_tokens_per_second(run) -> tuple[float | None, float | None]:
    """The run's tokens/s points (non-padding tokens over each logging interval), weighted by
    each interval's length, the first interval left out: it runs from the reporter's start,
    so it holds the model's load, the evaluation at start and the first steps' warm-up. Also
    the epoch time (s) of the first point, to tell the load from the training."""
    from experiments.models import MetricPoint

    points = list(
        MetricPoint.objects.filter(run=run, key="tokens_per_second")
        .order_by("step")
        .values_list("step", "value", "timestamp")
    )
    tokens = seconds = 0.0
    for (_, _, before), (_, rate, now) in zip(points, points[1:], strict=False):
        interval = (now - before) / 1000
        tokens, seconds = tokens + rate * interval, seconds + interval
    first = points[0][2] / 1000 if points else None
    return (round(tokens / seconds, 1) if seconds > 0 else None), first


def run_technique(technique: str, model_dir: Path, args) -> dict:

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_version_upload
    from experiments.models import TrainingRun
    from experiments.services import experiment_create, run_enqueue
    from experiments.training.runner import train_next_run
    from finetune_hub.storage import artifact_path

    team, user = bench_team()
    dataset = Dataset.objects.create(
        team=team, name=f"d-{technique}-{time.time()}", task="instruction", created_by=user
    )
    # Examples near max_length, so activations match the estimate's assumption (full rows).
    words, longest = filling_words(model_dir, args.max_length)
    log(f"upload the data set: {words} words an example, the longest {longest} tokens")
    version = dataset_version_upload(
        dataset=dataset,
        filename="b.jsonl",
        by=user,
        data=synthetic_jsonl(400, words),
        max_length=args.max_length,
        base_model=str(model_dir),
    )
    params = {
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "max_length": args.max_length,
        "save_steps": 10_000,
        "eval_steps": 10_000,
        "logging_steps": args.logging_steps,
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
    from experiments.workers import worker_heartbeat

    worker = worker_heartbeat()
    device = "cuda" if worker.cuda else "cpu"
    log(f"queue and train (estimate {experiment.estimate[device]['total_gb']} GB)")
    started, started_epoch = time.monotonic(), time.time()
    run = train_next_run(run_id=run_enqueue(experiment=experiment, by=user).pk)
    elapsed = time.monotonic() - started
    tokens_per_s, first_point = real_tokens_per_second(run)
    if run.status != TrainingRun.Status.SUCCEEDED:
        print(run.error, file=sys.stderr, flush=True)
    if args.logs:
        source = artifact_path(run.folder) / "train.log"
        if source.exists():
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            target = Path(args.logs) / f"train-{args.shape}-{technique}-run{run.pk}.log"
            shutil.copyfile(source, target)
    estimate = experiment.estimate[device]
    peak = run.peak_memory_bytes
    return {
        "shape": args.shape,
        "technique": technique,
        "gpus": len(run.gpus) if run.gpus else (1 if device == "cuda" else 0),
        "steps": run.step,
        "batch": args.batch,
        "max_length": args.max_length,
        "gradient_checkpointing": args.gradient_checkpointing,
        "peak_memory_gib": round(peak / GIB, 2) if peak else None,
        "estimate_gib": round(estimate["total_bytes"] / GIB, 2),
        "peak_over_estimate": round(peak / estimate["total_bytes"], 3) if peak else None,
        "real_tokens_per_s": tokens_per_s,
        "total_params": estimate["total_params"],
        "trainable_params": estimate["trainable_params"],
        "status": run.status,
        "error": (run.error or "")[-2000:],
        "wall_s": round(elapsed, 1),
        # From the enqueue to the first tokens/s point: the training process's start, the
        # model's load and the hash of its files, the evaluation at start, the first interval.
        "first_log_after_s": round(first_point - started_epoch, 1) if first_point else None,
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def describe_machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
