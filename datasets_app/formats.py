"""The five record formats: which fields each needs, how a record is checked, normalised,
and turned into the prompt/response text that training and evaluation use."""

import unicodedata

from datasets_app.models import DataFormat
from finetune_hub.errors import FieldError

REQUIRED = {
    DataFormat.INSTRUCTION: ("instruction", "output"),
    DataFormat.CHAT: ("messages",),
    DataFormat.COMPLETION: ("prompt", "completion"),
    DataFormat.CLASSIFICATION: ("text", "label"),
    DataFormat.PREFERENCE: ("prompt", "chosen", "rejected"),
}
OPTIONAL = {DataFormat.INSTRUCTION: ("input",)}
ROLES = ("system", "user", "assistant")
SPLIT_ALIASES = {
    "train": "train",
    "eval": "eval",
    "validation": "eval",
    "valid": "eval",
    "dev": "eval",
    "test": "test",
}


def detect(fields: dict) -> str | None:
    """The format whose required fields a record has, most specific first."""
    for fmt in (
        DataFormat.CHAT,
        DataFormat.PREFERENCE,
        DataFormat.CLASSIFICATION,
        DataFormat.INSTRUCTION,
        DataFormat.COMPLETION,
    ):
        if all(key in fields for key in REQUIRED[fmt]):
            return fmt
    return None


def check(fmt: str, fields: dict, line: int, labels: list[str]) -> list[FieldError]:
    errors = [
        FieldError(line=line, field=key, message=_text_problem(fields.get(key)))
        for key in REQUIRED[fmt] + OPTIONAL.get(fmt, ())
        if key != "messages"
        and _text_problem(fields.get(key), optional=key in OPTIONAL.get(fmt, ()))
    ]
    if fmt == DataFormat.CHAT:
        errors += _check_messages(fields.get("messages"), line)
    if fmt == DataFormat.CLASSIFICATION and labels and isinstance(fields.get("label"), str):
        if fields["label"].strip() not in labels:
            errors.append(
                FieldError(
                    line=line,
                    field="label",
                    message=(
                        f"Unknown label {fields['label']!r}; "
                        f"the dataset's labels are {', '.join(labels)}"
                    ),
                )
            )
    if fmt == DataFormat.PREFERENCE and not errors and fields["chosen"] == fields["rejected"]:
        errors.append(
            FieldError(line=line, field="rejected", message="chosen and rejected are the same text")
        )
    split = fields.get("split")
    if split not in (None, "") and str(split).strip().lower() not in SPLIT_ALIASES:
        errors.append(
            FieldError(
                line=line,
                field="split",
                message=(f"Unknown split {split!r}; use train, eval (or validation) or test"),
            )
        )
    return errors


def _text_problem(value, optional: bool = False) -> str:
    if value is None:
        return "" if optional else "Missing field"
    if not isinstance(value, str):
        return f"Must be text, got {type(value).__name__}"
    if not value.strip() and not optional:
        return "Empty field"
    return ""


def _check_messages(messages, line: int) -> list[FieldError]:
    def error(message: str) -> list[FieldError]:
        return [FieldError(line=line, field="messages", message=message)]

    if not isinstance(messages, list) or not messages:
        return error("messages must be a non-empty list of {role, content}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
            return error(f"messages[{i}] must be an object with role and content")
        if message.get("role") not in ROLES:
            return error(
                f"messages[{i}] has role {message.get('role')!r}; roles are {', '.join(ROLES)}"
            )
        if problem := _text_problem(message.get("content")):
            return error(f"messages[{i}].content: {problem}")
    roles = [m["role"] for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        return error("A system message may only come first")
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    if not turns or turns != expected[: len(turns)]:
        return error("Roles must alternate user, assistant, ... starting with user")
    if turns[-1] != "assistant":
        return error("The conversation must end with an assistant message")
    return []


def _clean(value):
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n"))
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def normalise(fmt: str, fields: dict) -> dict:
    """Only the format's fields, in a fixed order, with newlines and Unicode normalised:
    two files that say the same thing hash the same."""
    keys = REQUIRED[fmt] + OPTIONAL.get(fmt, ())
    out = {key: _clean(fields.get(key, "")) for key in keys}
    if fmt == DataFormat.CLASSIFICATION:
        out["label"] = out["label"].strip()
    if fmt == DataFormat.CHAT:
        out["messages"] = [{"role": m["role"], "content": m["content"]} for m in out["messages"]]
    return out


def split_of(fields: dict) -> str | None:
    value = fields.get("split")
    return SPLIT_ALIASES[str(value).strip().lower()] if value not in (None, "") else None


def to_messages(fmt: str, fields: dict) -> list[dict]:
    """The conversation a chat model trains on and is evaluated with (completion last)."""
    if fmt == DataFormat.CHAT:
        return fields["messages"]
    if fmt == DataFormat.INSTRUCTION:
        user = fields["instruction"] + (f"\n\n{fields['input']}" if fields.get("input") else "")
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": fields["output"]},
        ]
    if fmt == DataFormat.CLASSIFICATION:
        return [
            {"role": "user", "content": fields["text"]},
            {"role": "assistant", "content": fields["label"]},
        ]
    return [
        {"role": "user", "content": fields["prompt"]},
        {"role": "assistant", "content": fields.get("completion") or fields["chosen"]},
    ]


def prompt_and_reference(fmt: str, fields: dict) -> tuple[str, str]:
    """Plain text of what the model is given and what it should answer."""
    messages = to_messages(fmt, fields)
    prompt = "\n".join(m["content"] for m in messages[:-1])
    return prompt, messages[-1]["content"]


def chat_prompt(messages: list[dict], tokenizer) -> str:
    """The text a model is given for these messages, as TRL gave it in training: the chat
    template with the generation prompt when the tokenizer has one, else the contents one per
    line. Evaluation and serving both build their prompts here."""
    if not getattr(tokenizer, "chat_template", None):
        return "\n".join(m["content"] for m in messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_text(fmt: str, fields: dict, tokenizer) -> tuple[str, str]:
    """(the text the model is given, the reference answer)."""
    if fmt == DataFormat.COMPLETION:
        return prompt_and_reference(fmt, fields)
    messages = to_messages(fmt, fields)
    return chat_prompt(messages[:-1], tokenizer), messages[-1]["content"]
