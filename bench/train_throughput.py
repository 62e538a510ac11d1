"""Training throughput of a queued run against two plain Hugging Face scripts, in one process
and one command, on the same tokens (issue: training speed on the H200).

  A  Trainer + PEFT, padded to the longest example of each batch of 8
  B  Trainer + PEFT, greedy packing into 4 rows x 2,048 tokens, position ids reset per example
  finetune_hub  the code a worker runs: dataset_version_upload -> experiment_create ->
     run_enqueue -> trainer.build_trainer -> train(), with its defaults or with switches

All three train on the same tokenised examples (the engine's own tokenisation, prompt tokens
masked out of the loss), LoRA r16 / alpha 32 / dropout 0.05 on all seven projections, AdamW
at a constant 2e-4, bf16, on a random-init Llama-shaped model built from a config (no weights
are downloaded). The data is learnable and of low entropy (the answer copies the first third
of the ticket, words from a 50-word vocabulary), so equal loss at equal tokens means equal
training. Real tokens count only non-pad tokens; the first --warmup steps are not timed.

  python bench/train_throughput.py --shapes 1b \
      --setups A,B,finetune_hub,finetune_hub:liger_kernel=off
  python bench/train_throughput.py --shapes tiny --steps 12 --warmup 2     # CPU smoke run

A setup `finetune_hub:key=value,...` overrides hyperparameters (on/off for switches). Writes
--out (default bench/results/train_throughput_h200.json): {"command", "machine", "versions",
"settings", "varlen_check", "rows": [{shape, technique, setup, real_tokens_per_s,
peak_memory_gib, loss_at_equal_tokens, ...}]}.
"""

import argparse
import gc
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import SHAPES  # noqa: E402 (after the path is set)

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = (
    "the order arrived late and the box was damaged so I would like a refund or a replacement "
    "please check my account because the invoice shows a different amount than the receipt "
    "delivery address is wrong battery screen login password coupon parcel tracking number "
    "customer support weekend store manager"
).split()
PEAK_FLOPS = 790e12  # the dense bf16 rate measured on one H200 (8192^3 products)
LEARNING_RATE = 2e-4


def dataset_jsonl(n: int, max_words: int, seed: int = 0) -> bytes:
    """Tickets of lognormal length (median about 250 tokens); the answer is the first third
    of the ticket: learnable, and of low entropy."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = int(min(max_words, max(12, round(rng.lognormvariate(math.log(150), 0.9)))))
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        answer = " ".join(text.split()[: max(4, words // 3)])
        record = {"instruction": f"Summarise ticket {i}.", "input": text, "output": answer}
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


def ensure_tokenizer(folder: Path) -> Path:
    """The SmolLM2 tokenizer, taken once from the embedded GGUF file (no download)."""
    if not (folder / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        from inference.base_models import embedded_gguf

        gguf = embedded_gguf()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def build_model(shape: str, tokenizer_dir: Path, work: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = work / "models" / f"rand-{shape}"
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    free_memory()
    return out


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Counting:
    """Wraps a collator: (real tokens, tokens in the batch) per batch, in order."""

    def __init__(self, inner):
        self.inner, self.stats = inner, []

    def __call__(self, features):
        batch = self.inner(features)
        ids = batch["input_ids"]
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        elif "n_real" in batch:
            real = int(batch.pop("n_real"))
        else:  # padding-free: one row of whole examples
            real = int(ids.numel())
        self.stats.append((real, int(ids.numel())))
        return batch


def step_clock():
    import torch
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    return Clock()


# ---------------------------------------------------------------------- baselines A and B


def labelled(example: dict) -> tuple[list[int], list[int]]:
    """(input ids, labels) from the engine's tokenisation: TRL has already set the prompt
    tokens' labels to -100 (older TRL kept a completion mask instead)."""
    ids = list(example["input_ids"])
    if "labels" in example:
        return ids, list(example["labels"])
    mask = example["completion_mask"]
    return ids, [t if m else -100 for t, m in zip(ids, mask, strict=True)]


def padded_collator(pad_id: int):
    import torch

    def collate(features):
        longest = max(len(f[0]) for f in features)
        ids = [f[0] + [pad_id] * (longest - len(f[0])) for f in features]
        labels = [f[1] + [-100] * (longest - len(f[1])) for f in features]
        mask = [[1] * len(f[0]) + [0] * (longest - len(f[0])) for f in features]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def packed_rows(examples, row_length: int, pad_id: int, seed: int = 0):
    """Greedy sequential packing of whole examples into rows of `row_length`, in shuffled
    order; position ids restart per example and the first label of each is masked."""
    order = random.Random(seed).sample(range(len(examples)), len(examples))
    rows, current, used = [], [], 0

    def close(parts):
        ids, labels, positions = [], [], []
        for part_ids, part_labels in parts:
            ids += part_ids
            labels += [-100] + part_labels[1:]
            positions += list(range(len(part_ids)))
        real, tail = len(ids), row_length - len(ids)
        ids += [pad_id] * tail
        labels += [-100] * tail
        positions += list(range(tail))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions, "n": real})

    for i in order:
        part = examples[i]
        if used + len(part[0]) > row_length and current:
            close(current)
            current, used = [], 0
        current.append(part)
        used += len(part[0])
    if current:
        close(current)
    return rows


def packed_collator(features):
    import torch

    batch = {
        key: torch.tensor([f[key] for f in features])
        for key in ("input_ids", "labels", "position_ids")
    }
    batch["n_real"] = sum(f["n"] for f in features)
    return batch


def train_baseline(setup: str, shape: str, technique: str, model_dir: Path, examples, args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

    free_memory()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    quantized = {}
    if technique == "qlora":  # NF4, double quantisation, bf16 compute: as the engine's QLoRA
        quantized["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.bfloat16 if cuda else torch.float32,
        attn_implementation="sdpa",
        device_map={"": 0} if cuda else None,
        **quantized,
    )
    model.config.use_cache = False
    checkpointing = args.checkpointing_for(shape) or technique == "qlora"
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model = get_peft_model(
        model,
        LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules=MODULES, task_type="CAUSAL_LM"
        ),
    )
    pad_id = model.config.pad_token_id or 0
    if setup == "A":
        data, collator, batch = examples, padded_collator(pad_id), 8
    else:
        data = packed_rows(examples, args.pack_length, pad_id)
        collator, batch = packed_collator, 4
    counting, clock = Counting(collator), step_clock()
    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix=f"tp-{setup}-"),
        per_device_train_batch_size=batch,
        max_steps=args.steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=42,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=data,
        data_collator=counting,
        callbacks=[clock],
    )
    trainer.train()
    row = measure(trainer, counting, clock, args)
    row.update(setup=setup, gradient_checkpointing=checkpointing, batch=batch)
    del trainer, model
    free_memory()
    return row


# ---------------------------------------------------------------------- the engine


def engine_setup(spec: str) -> dict:
    """'finetune_hub:liger_kernel=off,per_device_train_batch_size=8' -> overrides."""
    overrides = {}
    _, _, rest = spec.partition(":")
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        value = {"on": True, "off": False}.get(value, value)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        overrides[key] = value
    return overrides


def train_engine(
    spec: str, shape: str, technique: str, model_dir: Path, version, team, user, args
) -> dict:
    import torch

    from experiments.services import experiment_create, run_enqueue
    from experiments.training.reporting import RunReporter
    from experiments.training.trainer import build_trainer, speed_settings
    from experiments.workers import worker_heartbeat

    free_memory()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    checkpointing = args.checkpointing_for(shape) or technique == "qlora"
    params = {
        "max_steps": args.steps,
        "per_device_train_batch_size": 4,
        "max_length": args.pack_length,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "save_steps": 100_000,
        "eval_steps": 100_000,
        "logging_steps": 1,
        "gradient_checkpointing": checkpointing,
        **({"lora_target_modules": MODULES} if technique != "full" else {}),
        **engine_setup(spec),
    }
    experiment = experiment_create(
        team=team,
        name=f"tp-{spec}-{time.time()}",
        dataset_version=version,
        base_model=str(model_dir),
        technique=technique,
        hyperparameters=params,
        by=user,
    )
    worker_heartbeat()  # this process is the worker
    run = run_enqueue(experiment=experiment, by=user, dispatch=False)
    out = args.work / "artifacts" / "out" / str(run.pk)
    trainer = build_trainer(run, out, RunReporter(run, args.work / f"{run.pk}.log"))
    counting, clock = Counting(trainer.data_collator), step_clock()
    trainer.data_collator = counting
    trainer.add_callback(clock)
    trainer.train()
    row = measure(trainer, counting, clock, args)
    row.update(
        setup=spec,
        gradient_checkpointing=checkpointing,
        batch=params["per_device_train_batch_size"],
        speed_settings=speed_settings(run),
        attention=trainer.model.config._attn_implementation,
    )
    del trainer
    free_memory()
    return row


def engine_examples(run_version, team, user, model_dir: Path, args):
    """The engine's tokenised training examples (what A and B train on too)."""
    from experiments.services import experiment_create, run_enqueue
    from experiments.training.reporting import RunReporter
    from experiments.training.trainer import build_trainer
    from experiments.workers import worker_heartbeat

    experiment = experiment_create(
        team=team,
        name=f"tp-tokens-{time.time()}",
        dataset_version=run_version,
        base_model=str(model_dir),
        technique="lora",
        hyperparameters={"packing": False, "max_length": args.pack_length},
        by=user,
    )
    worker_heartbeat()
    run = run_enqueue(experiment=experiment, by=user, dispatch=False)
    trainer = build_trainer(run, args.work / "tokens", RunReporter(run, args.work / "tokens.log"))
    examples = [labelled(row) for row in trainer.train_dataset]
    del trainer
    free_memory()
    return examples


# ---------------------------------------------------------------------- figures


def measure(trainer, counting, clock, args) -> dict:
    import torch

    times, warmup = clock.times, args.warmup
    steps = len(times)
    seconds = times[-1] - times[warmup - 1]
    timed = counting.stats[warmup:steps]  # batch k is trained by step k + 1
    real, padded = sum(r for r, _ in timed), sum(p for _, p in timed)
    seen = {p.data_ptr(): p.numel() for p in trainer.model.parameters()}
    n_params = sum(seen.values())
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    cumulative, curve = 0, []
    for step, (real_tokens, _) in enumerate(counting.stats[:steps], start=1):
        cumulative += real_tokens
        if step in losses:
            curve.append((cumulative, losses[step]))
    rate = real / seconds
    return {
        "steps": steps,
        "real_tokens_per_s": round(rate),
        "padded_tokens_per_s": round(padded / seconds),
        "pad_fraction": round(1 - real / padded, 3),
        "s_per_step": round(seconds / (steps - warmup), 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "mfu_6n": round(6 * n_params * rate / PEAK_FLOPS, 4),
        "n_params": n_params,
        "curve": curve,
    }


def loss_at_equal_tokens(rows: list[dict]) -> None:
    """Each row's mean step loss over the last fifth of the token budget every row reached
    (the rows see different batches, so single steps are noisy), and over its last 10 steps.
    Rows that take different tokens per step (A's padded batches of 8 against 4 packed rows)
    also differ in optimizer steps at equal tokens: compare like with like (A with the engine
    unpacked, B with the engine packed)."""
    budget = min(row["curve"][-1][0] for row in rows)
    for row in rows:
        window = [loss for tokens, loss in row["curve"] if 0.8 * budget <= tokens <= budget]
        if not window:  # fewer, larger steps: the step that ends nearest the budget
            window = [min(row["curve"], key=lambda point: abs(point[0] - budget))[1]]
        row["loss_at_equal_tokens"] = round(sum(window) / len(window), 4)
        row["tokens_for_loss"] = budget
        last = [loss for _, loss in row["curve"][-10:]]
        row["final_loss"] = round(sum(last) / len(last), 4)


def varlen_check() -> dict:
    """The varlen attention against SDPA on the same packed row, example by example:
    logits and the gradient of a LoRA-free small model must agree to bf16 precision."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.training import speed

    if not speed.varlen_available():
        return {"skipped": "no CUDA varlen attention here"}
    speed.register_varlen_attention()
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=1000,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    lengths = [37, 300, 5, 170]
    ids = torch.randint(3, 1000, (1, sum(lengths)), device="cuda")
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).cuda()
    model.config._attn_implementation = speed.VARLEN
    packed = model(input_ids=ids, position_ids=positions).logits[0].float()
    model.config._attn_implementation = "sdpa"
    separate, start = [], 0
    for n in lengths:
        separate.append(model(input_ids=ids[:, start : start + n]).logits[0].float())
        start += n
    separate = torch.cat(separate)
    error = (packed - separate).abs().max().item()
    scale = separate.abs().max().item()
    return {"max_abs_error": error, "logit_scale": scale, "ok": error <= 0.02 * scale}


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)"


def versions() -> dict:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "liger-kernel", "triton"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1b")
    parser.add_argument("--setups", default="A,B,finetune_hub")
    parser.add_argument(
        "--techniques", default="lora", help="lora, qlora (A and B in 4 bits too), full (engine)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--pack-length", type=int, default=2048)
    parser.add_argument("--checkpointing", default="8b", help="shapes trained with it")
    parser.add_argument(
        "--tokenizer",
        default=str(ROOT / "var/bench-tokenizer"),
        help="a tokenizer folder; made from the embedded GGUF when missing",
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results/train_throughput_h200.json"))
    parser.add_argument("--work", default=tempfile.mkdtemp(prefix="fh-tp-"))
    args = parser.parse_args()
    args.work = Path(args.work)
    checkpointed = set(args.checkpointing.split(","))
    args.checkpointing_for = lambda shape: shape in checkpointed

    os.environ.update(
        FINETUNE_HUB_VAR=str(args.work / "var"),
        ARTIFACT_ROOT=str(args.work / "artifacts"),
        BASE_MODEL_DIRS=str(args.work / "models"),
        DJANGO_SETTINGS_MODULE="finetune_hub.settings",
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_version_upload
    from finetune_hub.models import Membership, Team

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(name="bench")
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "admin"})

    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "examples": args.examples,
            "pack_length": args.pack_length,
            "learning_rate": LEARNING_RATE,
            "peak_flops": PEAK_FLOPS,
        },
        "varlen_check": varlen_check(),
        "rows": [],
    }
    print(json.dumps({k: report[k] for k in ("machine", "versions", "varlen_check")}), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        model_dir = build_model(shape, ensure_tokenizer(Path(args.tokenizer)), args.work)
        dataset = Dataset.objects.create(
            team=team, name=f"tp-{shape}-{time.time()}", task="instruction", created_by=user
        )
        version = dataset_version_upload(
            dataset=dataset,
            filename="tp.jsonl",
            by=user,
            data=dataset_jsonl(args.examples, max_words=args.pack_length // 2),
            max_length=args.pack_length,
            base_model=str(model_dir),
        )
        examples = None
        setups = args.setups.split(";") if ";" in args.setups else args.setups.split(",")
        for technique in args.techniques.split(","):
            rows = []
            for setup in setups:
                if setup in ("A", "B") and technique == "full":
                    continue  # the baselines are LoRA scripts; full fine-tuning is held to MFU
                try:
                    if setup in ("A", "B"):
                        if examples is None:
                            examples = engine_examples(version, team, user, model_dir, args)
                        row = train_baseline(setup, shape, technique, model_dir, examples, args)
                    else:
                        row = train_engine(
                            setup, shape, technique, model_dir, version, team, user, args
                        )
                except Exception as exc:  # keep going (an OOM, a missing kernel): record it
                    import traceback

                    traceback.print_exc()
                    row = {"setup": setup, "error": f"{type(exc).__name__}: {exc}"[:500]}
                    free_memory()
                row.update(shape=shape, technique=technique)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
            measured = [row for row in rows if "curve" in row]
            if measured:
                loss_at_equal_tokens(measured)
            base = {row["setup"]: row for row in measured}
            for row in measured:
                for name in ("A", "B"):
                    if name in base:
                        ratio = row["real_tokens_per_s"] / base[name]["real_tokens_per_s"]
                        row[f"speed_vs_{name}"] = round(ratio, 3)
            report["rows"] += rows
            out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['command']}\n{report['machine']}")
    print(
        "| shape | technique | setup | real tokens/s | vs A | vs B | peak GiB | s/step "
        "| loss@tokens | loss, last 10 steps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in report["rows"]:
        if "error" in row:
            print(
                f"| {row['shape']} | {row['technique']} | {row['setup']} "
                f"| error: {row['error'][:80]} |"
            )
            continue
        print(
            f"| {row['shape']} | {row['technique']} | {row['setup']} "
            f"| {row['real_tokens_per_s']:,} "
            f"| {row.get('speed_vs_A', '')} | {row.get('speed_vs_B', '')} "
            f"| {row['peak_memory_gib']} | {row['s_per_step']} "
            f"| {row.get('loss_at_equal_tokens')} | {row.get('final_loss')} |"
        )


if __name__ == "__main__":
    main()
