"""Loads a subject's model and answers prompts: batched, sorted by length, left-padded,
greedy unless sampling is asked for, with the chat template applied as TRL applied it in
training (prompt messages + generation prompt). Also the per-sample loss of a reference."""

import time

import torch

from finetune_hub.model_files import is_adapter, tokenizer_source
from finetune_hub.storage import artifact_path
from inference import base_models


def load(base_model: str, output_path: str | None = None):
    """The base model, with a run's adapter on top, or a run's full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = base_models.resolve(base_model)
    folder = artifact_path(output_path) if output_path else None
    if folder and not is_adapter(folder):
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
        if folder:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(folder, base))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> tuple[list[str], int, float]:
    """Answers in the prompts' order; returns (answers, new tokens, seconds)."""
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i])["input_ids"]))
    answers: list[str] = [""] * len(prompts)
    tokens, started = 0, time.perf_counter()
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if do_sample
        else {"do_sample": False}
    )
    torch.manual_seed(seed)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        inputs = tokenizer(
            [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        tokens += int((new != tokenizer.pad_token_id).sum())
        for i, ids in zip(batch, new, strict=True):
            answers[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return answers, tokens, time.perf_counter() - started


def reference_losses(
    model, tokenizer, prompts: list[str], references: list[str], batch_size: int
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each reference given its prompt (the
    completion-only loss): a corpus loss is the total over the total, not a mean of means."""
    losses = []
    eos = tokenizer.eos_token or ""
    for start in range(0, len(prompts), batch_size):
        ps, rs = prompts[start : start + batch_size], references[start : start + batch_size]
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ps]
        full_ids = [
            tokenizer(p + r + eos, add_special_tokens=False)["input_ids"]
            for p, r in zip(ps, rs, strict=True)
        ]
        width = max(map(len, full_ids))
        ids = torch.full((len(ps), width), tokenizer.pad_token_id)
        labels = torch.full((len(ps), width), -100)
        mask = torch.zeros((len(ps), width), dtype=torch.long)
        for row, (p, f) in enumerate(zip(prompt_ids, full_ids, strict=True)):
            ids[row, : len(f)] = torch.tensor(f)
            labels[row, len(p) : len(f)] = torch.tensor(f[len(p) :])
            mask[row, : len(f)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
        )
        counts = (target != -100).sum(1)
        losses += list(zip(nll.sum(1).tolist(), counts.tolist(), strict=True))
    return losses
