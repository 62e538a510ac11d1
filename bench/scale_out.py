"""One run on several GPUs, through the project's own queue (issue 14): the same LoRA run on
1 and N GPUs with the same global batch (loss curves and real tokens/s), and a full
fine-tune sharded with FSDP that is cancelled after a checkpoint and resumed.

Every run goes `dataset_version_upload -> experiment_create -> run_enqueue ->
train_next_run`: the worker claims free GPUs for it, and the supervisor starts it with
torchrun on N GPUs (one process a GPU). The data and settings are the training-speed
issue's (bench/train_throughput.py): 2,000 instruction examples of lognormal length (median
about 250 tokens), packed into rows of 2,048 tokens, LoRA r16 / alpha 32 / dropout 0.05 on
all seven projections, AdamW at a constant 2e-4, bf16, gradient checkpointing on the 8B shape,
on a random-init model built from a config (nothing downloaded).

    python bench/scale_out.py --shape llama-3.1-8b --lora-gpus 1,2 --global-rows 8 \\
        --steps 40 --fsdp-gpus 2 --fsdp-steps 20 --fsdp-save 12 --json out/scale_out.json
    python bench/scale_out.py --shape tiny --lora-gpus 1,2 --steps 8 --global-rows 4  # CPU

Real tokens/s is the run's own `tokens_per_second` metric (all ranks' non-padding tokens),
weighted by each logging interval's length, leaving out the points up to --warmup steps.
MFU is 6N x real tokens/s over the GPUs' dense bf16 peak (the run's `mfu` metric). Peak
memory is rank 0's `torch.cuda.max_memory_allocated()`: with data parallel and FSDP every
rank holds the same, so it is the figure per GPU. --json writes {"rows": [{gpus, technique,
shape, real_tokens_per_s, peak_memory_gib_per_gpu, ...}], "loss_curves": ...}.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import SHAPES  # noqa: E402 (after the path is set)
from bench.train_memory import (  # noqa: E402
    bench_team,
    build_model,
    describe_machine,
    log,
    setup_django,
    versions,
)  # noqa: E402
from bench.train_throughput import LEARNING_RATE, MODULES, dataset_jsonl  # noqa: E402

GIB = 2**30
ROW = 4  # packed rows of max_length a GPU takes a micro-step (the speed issue's batch)


def points(run, key: str) -> list[tuple[int, float, float]]:
    from experiments.models import MetricPoint

    return list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step", "timestamp")
        .values_list("step", "value", "timestamp")
    )


def weighted_rate(run, after_step: int, restarts: tuple[int, ...] = ()) -> float | None:
    """Tokens/s over the intervals that end after `after_step`, each weighted by its length.
    An interval that ends at the first point of a resumed attempt (a step after one of
    `restarts`, the checkpoints resumed from) spans the restart and is left out."""
    series = points(run, "tokens_per_second")
    tokens = seconds = 0.0
    for (before_step, _, before), (step, rate, now) in zip(series, series[1:], strict=False):
        if step <= after_step or any(before_step <= r < step for r in restarts):
            continue
        interval = (now - before) / 1000
        tokens, seconds = tokens + rate * interval, seconds + interval
    return round(tokens / seconds, 1) if seconds > 0 else None


def peak_gib(run) -> float | None:
    """Rank 0's peak GPU memory: the run's own figure once it succeeded, else the largest of
    its `peak_memory_gib` points (written at every logging step on CUDA workers)."""
    if run.peak_memory_bytes:
        return round(run.peak_memory_bytes / GIB, 2)
    values = [value for _, value, _ in points(run, "peak_memory_gib")]
    return round(max(values), 2) if values else None


def mean_after(run, key: str, after_step: int, restarts: tuple[int, ...] = ()) -> float | None:
    """The mean of the points after `after_step`, without each resumed attempt's first point
    (its interval spans the restart)."""
    series = points(run, key)
    values = [
        value
        for (before_step, _, _), (step, value, _) in zip(series, series[1:], strict=False)
        if step > after_step and not any(before_step <= r < step for r in restarts)
    ]
    return sum(values) / len(values) if values else None


def upload(team, user, model_dir: Path, args):
    from datasets_app.models import Dataset
    from datasets_app.services import dataset_version_upload

    dataset = Dataset.objects.create(
        team=team, name=f"scale-{time.time()}", task="instruction", created_by=user
    )
    return dataset_version_upload(
        dataset=dataset,
        filename="tickets.jsonl",
        by=user,
        data=dataset_jsonl(args.examples, max_words=args.max_length // 2),
        max_length=args.max_length,
        base_model=str(model_dir),
    )


def train(team, user, version, model_dir: Path, technique: str, gpus: int, args, **extra):
    """A queued run on `gpus` GPUs with the global batch of --global-rows packed rows; with
    `cancel_after` it is cancelled once its checkpoint at that step exists, then resumed."""
    from experiments.models import TrainingRun
    from experiments.services import (
        experiment_create,
        run_cancel,
        run_enqueue,
        run_resume,
    )
    from experiments.training.runner import train_next_run
    from experiments.workers import worker_heartbeat

    cancel_after = extra.pop("cancel_after", None)
    per_step = ROW * gpus
    if args.global_rows % per_step:
        raise SystemExit(f"--global-rows {args.global_rows} is not a multiple of {per_step}")
    params = {
        "max_steps": args.steps,
        "per_device_train_batch_size": ROW,
        "gradient_accumulation_steps": args.global_rows // per_step,
        "gpus": gpus,
        "max_length": args.max_length,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "save_steps": 100_000,
        "eval_steps": 100_000,
        "logging_steps": 1,
        "gradient_checkpointing": args.shape not in ("tiny", "llama-3.2-1b"),
        "early_stopping_patience": 0,
        **({"lora_target_modules": MODULES} if technique != "full" else {}),
        **extra,
    }
    experiment = experiment_create(
        team=team,
        name=f"scale-{technique}-{gpus}-{time.time()}",
        dataset_version=version,
        base_model=str(model_dir),
        technique=technique,
        hyperparameters=params,
        by=user,
    )
    estimate = experiment.estimate["cuda"]
    log(f"{technique} on {gpus} GPU(s): estimate {estimate['total_gb']} GB per GPU")
    worker_heartbeat()  # this process is the worker: its GPUs are live before the enqueue
    run = run_enqueue(experiment=experiment, by=user, dispatch=False)
    started = time.monotonic()
    attempts = []

    def cancel_at_checkpoint(current: TrainingRun) -> None:
        if cancel_after and not current.cancel_requested:
            if current.checkpoints.filter(step__gte=cancel_after).exists():
                log(f"checkpoint at step {cancel_after} is written: cancel the run")
                run_cancel(run=current, by=user)

    try:
        run = train_next_run(run_id=run.pk, on_poll=cancel_at_checkpoint)
        attempts.append({"status": run.status, "step": run.step, "s": time.monotonic() - started})
        if cancel_after and run.status == TrainingRun.Status.CANCELLED:
            resumed_from = run.checkpoints.order_by("-step").first().step
            log(f"cancelled at step {run.step}; resume from the checkpoint at {resumed_from}")
            worker_heartbeat()  # live again: run_resume checks that a worker can hold the run
            run_resume(run=run, by=user)
            again = time.monotonic()
            run = train_next_run(run_id=run.pk)
            attempts.append(
                {
                    "status": run.status,
                    "step": run.step,
                    "s": time.monotonic() - again,
                    "resumed_from": resumed_from,
                }
            )
    finally:
        if args.logs:  # also when the bench itself fails: the log says why
            source = Path(os.environ["ARTIFACT_ROOT"]) / run.folder / "train.log"
            if source.exists():
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, Path(args.logs) / f"train-{technique}-{gpus}gpu.log")
    run.refresh_from_db()
    if run.status != TrainingRun.Status.SUCCEEDED:
        print(run.error, file=sys.stderr, flush=True)
    losses = [(step, round(value, 5)) for step, value, _ in points(run, "loss")]
    restarts = tuple(a["resumed_from"] for a in attempts if "resumed_from" in a)
    mfu = mean_after(run, "mfu", args.warmup, restarts)
    return {
        "shape": args.shape,
        "technique": technique + (" (FSDP full shard)" if params.get("fsdp") else ""),
        "gpus": gpus,
        "status": run.status,
        "steps": run.step,
        "global_batch_rows": args.global_rows,
        "per_device_rows": ROW,
        "gradient_accumulation_steps": params["gradient_accumulation_steps"],
        "max_length": args.max_length,
        "gradient_checkpointing": params["gradient_checkpointing"],
        "real_tokens_per_s": weighted_rate(run, args.warmup, restarts),
        "mfu": round(mfu, 4) if mfu is not None else None,
        "peak_memory_gib_per_gpu": peak_gib(run),
        "estimate_gib_per_gpu": round(estimate["total_bytes"] / GIB, 2),
        "attempts": attempts,
        "wall_s": round(time.monotonic() - started, 1),
        "error": (run.error or "")[-2000:],
        "losses": losses,
    }


def compare(one: dict, many: dict, warmup: int) -> dict:
    """How far the N-GPU loss curve is from the 1-GPU one at the same steps."""
    a, b = dict(one["losses"]), dict(many["losses"])
    steps = sorted(set(a) & set(b))
    gaps = [abs(b[s] - a[s]) / abs(a[s]) for s in steps if a[s]]
    late = [s for s in steps if s > warmup]
    speedup = (
        round(many["real_tokens_per_s"] / one["real_tokens_per_s"], 3)
        if many["real_tokens_per_s"] and one["real_tokens_per_s"]
        else None
    )
    return {
        "gpus": many["gpus"],
        "speedup_real_tokens_per_s": speedup,
        "steps_compared": len(steps),
        "max_relative_loss_gap": round(max(gaps), 4) if gaps else None,
        "mean_relative_loss_gap": round(sum(gaps) / len(gaps), 4) if gaps else None,
        "mean_loss_after_warmup_1gpu": round(sum(a[s] for s in late) / len(late), 4)
        if late
        else None,
        "mean_loss_after_warmup_ngpu": round(sum(b[s] for s in late) / len(late), 4)
        if late
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--lora-gpus", default="1,2", help="GPU counts of the LoRA runs")
    parser.add_argument("--global-rows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the rates")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--fsdp-gpus", type=int, default=0, help="0: no FSDP run")
    parser.add_argument("--fsdp-steps", type=int, default=20)
    parser.add_argument("--fsdp-save", type=int, default=12, help="checkpoint, cancel, resume")
    parser.add_argument("--tokenizer", default=str(ROOT / ".bench-carry/tokenizer"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json")
    parser.add_argument("--logs")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fth-scale-"))
    started = time.monotonic()
    model_dir = build_model(args.shape, Path(args.tokenizer), work / "models" / args.shape)
    log(f"model {args.shape} ready in {time.monotonic() - started:.0f} s")
    setup_django(work, model_dir)
    team, user = bench_team()
    version = upload(team, user, model_dir, args)
    log(f"data set: {version.counts}")

    rows, comparisons = [], []
    for gpus in [int(n) for n in args.lora_gpus.split(",") if n]:
        rows.append(train(team, user, version, model_dir, "lora", gpus, args))
        log(summary(rows[-1]))
    lora = {row["gpus"]: row for row in rows}
    if 1 in lora:
        comparisons = [compare(lora[1], row, args.warmup) for g, row in lora.items() if g > 1]
        for comparison in comparisons:
            log(f"comparison: {comparison}")
    if args.fsdp_gpus:
        fsdp_args = argparse.Namespace(**{**vars(args), "steps": args.fsdp_steps})
        rows.append(
            train(
                team,
                user,
                version,
                model_dir,
                "full",
                args.fsdp_gpus,
                fsdp_args,
                fsdp=True,
                learning_rate=2e-5,
                save_steps=args.fsdp_save,
                cancel_after=args.fsdp_save,
            )
        )
        log(summary(rows[-1]))
    machine, command = describe_machine(), " ".join(sys.argv)
    result = {
        "command": command,
        "machine": machine,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "versions": versions(),
        "rows": rows,
        "comparisons": comparisons,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json}")
    log(f"done in {time.monotonic() - started:.0f} s")


def summary(row: dict) -> str:
    return (
        f"{row['technique']} on {row['gpus']} GPU(s): {row['status']} at step {row['steps']} "
        f"in {row['wall_s']} s; {row['real_tokens_per_s']} real tokens/s, MFU {row['mfu']}, "
        f"peak {row['peak_memory_gib_per_gpu']} GiB per GPU (estimate "
        f"{row['estimate_gib_per_gpu']}); attempts {row['attempts']}"
    )


if __name__ == "__main__":
    main()
