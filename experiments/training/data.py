"""A run's examples as the records TRL's trainers read: prompt-completion for SFT (the loss
on the completion only), prompt/chosen/rejected for DPO and the reward model, the prompt alone
for GRPO (and only the prompts that leave room for a completion)."""

import logging

from datasets_app import formats
from datasets_app.models import DataFormat
from experiments.models import Technique, TrainingRun

log = logging.getLogger(__name__)


def sft_record(fmt: str, fields: dict) -> dict:
    """Prompt-completion records, so SFTTrainer computes the loss on the completion only."""
    if fmt == DataFormat.COMPLETION:
        return {"prompt": fields["prompt"], "completion": fields["completion"]}
    messages = formats.to_messages(fmt, fields)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def dpo_record(fields: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": fields["prompt"]}],
        "chosen": [{"role": "assistant", "content": fields["chosen"]}],
        "rejected": [{"role": "assistant", "content": fields["rejected"]}],
    }


def prompt_record(fmt: str, fields: dict) -> dict:
    """The prompt alone, for GRPO to sample completions of (a chat prompt as messages)."""
    if fmt == DataFormat.COMPLETION:
        return {"prompt": fields["prompt"]}
    if fmt == DataFormat.PREFERENCE:
        return {"prompt": [{"role": "user", "content": fields["prompt"]}]}
    return {"prompt": formats.to_messages(fmt, fields)[:-1]}


# Techniques that learn from a prompt with a chosen and a rejected answer.
PAIRED = (Technique.DPO, Technique.REWARD)


def build_datasets(run: TrainingRun):
    from datasets import Dataset

    version, technique = run.experiment.dataset_version, run.experiment.technique
    if technique in PAIRED:
        convert = dpo_record
    elif technique == Technique.GRPO:
        convert = lambda f: prompt_record(version.format, f)  # noqa: E731
    else:
        convert = lambda f: sft_record(version.format, f)  # noqa: E731
    rows = {"train": [], "eval": []}
    for example in version.examples.filter(split__in=rows).order_by("position"):
        rows[example.split].append(convert(example.fields))
    return Dataset.from_list(rows["train"]), (
        Dataset.from_list(rows["eval"]) if rows["eval"] else None
    )


def prompts_that_fit(dataset, tokenizer, params: dict):
    """GRPO's prompts with room for a completion: max_length bounds a prompt and its
    completion together, so longer prompts are left out (as DPO and the reward model leave
    out pairs over max_length)."""
    if dataset is None:
        return None
    room = params["max_length"] - params["max_completion_length"]

    def fits(row) -> bool:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            return len(tokenizer(prompt)["input_ids"]) <= room
        encoded = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return len(encoded["input_ids"]) <= room

    kept = dataset.filter(fits)
    if len(kept) < len(dataset):
        log.info(
            "%d of %d prompts are over %d tokens (max_length %d less max_completion_length %d) "
            "and are left out",
            len(dataset) - len(kept),
            len(dataset),
            room,
            params["max_length"],
            params["max_completion_length"],
        )
    return kept
