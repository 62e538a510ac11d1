"""Checks an upload completely before anything is stored: errors reject it with their line
and field; warnings are kept in the version's validation report."""

import hashlib
import json
from dataclasses import dataclass, field

from experiments.datasets import formats, parsing, quality
from experiments.models import DataFormat, Split
from finetune_hub.errors import FieldError, ServiceError

MAX_ERRORS_REPORTED = 100


@dataclass
class Row:
    line: int
    fields: dict
    split: str | None
    content_hash: str


@dataclass
class ValidatedUpload:
    format: str
    rows: list[Row]
    warnings: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def reject(errors: list[FieldError], what: str = "The file was rejected") -> ServiceError:
    lines = {e.line for e in errors if e.line}
    where = f" on {len(lines)} line{'s' * (len(lines) != 1)}" if lines else ""
    return ServiceError(
        detail=f"{what}: {len(errors)} problem{'s' * (len(errors) != 1)}{where}",
        status=422,
        errors=errors[:MAX_ERRORS_REPORTED],
    )


def content_hash(fields: dict) -> str:
    return hashlib.sha256(
        json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def validate_upload(
    *,
    filename: str,
    data: bytes,
    fmt: str,
    task: str,
    labels: list[str],
    tokenizer,
    max_length: int,
    max_bytes: int,
) -> ValidatedUpload:
    if len(data) > max_bytes:
        raise reject(
            [
                FieldError(
                    field="file",
                    message=(f"The file is {len(data):,} bytes; the limit is {max_bytes:,}"),
                )
            ]
        )
    text, errors = parsing.decode(data)
    if errors:
        raise reject(errors)
    records, errors = parsing.parse(filename, text)
    if errors:
        raise reject(errors)
    if not records:
        raise reject([FieldError(field="file", message="The file holds no examples")])
    fmt = _format(fmt, task, records)
    errors = [e for r in records for e in formats.check(fmt, r.fields, r.line, labels)]
    if errors:
        raise reject(errors)
    rows = [_row(fmt, r) for r in records]
    lengths = _token_lengths(fmt, rows, tokenizer)
    errors = [
        FieldError(
            line=row.line,
            field=_longest_field(fmt),
            message=(f"{n} tokens, over max_length {max_length}"),
        )
        for row, n in zip(rows, lengths, strict=True)
        if n > max_length
    ]
    if errors:
        raise reject(errors)
    return ValidatedUpload(
        format=fmt,
        rows=rows,
        stats={
            "tokens": {
                "min": min(lengths),
                "max": max(lengths),
                "mean": round(sum(lengths) / len(lengths), 1),
            },
            "max_length": max_length,
        },
    )


def _format(fmt: str, task: str, records) -> str:
    if fmt == "auto":
        detected = formats.detect(records[0].fields)
        if detected is None:
            raise reject(
                [
                    FieldError(
                        line=records[0].line,
                        field="format",
                        message=(
                            "Cannot tell the format from the fields "
                            f"{', '.join(sorted(records[0].fields)) or '(none)'}; "
                            "expected instruction/input/output, messages, prompt/completion, "
                            "text/label or prompt/chosen/rejected"
                        ),
                    )
                ]
            )
        fmt = detected
    if fmt not in DataFormat.values:
        raise reject([FieldError(field="format", message=f"Unknown format {fmt!r}")])
    if fmt != task:
        raise reject(
            [
                FieldError(
                    field="format",
                    message=(f"This dataset's task is {task}; the file is in {fmt} format"),
                )
            ]
        )
    return fmt


def _row(fmt: str, record: parsing.Record) -> Row:
    fields = formats.normalise(fmt, record.fields)
    return Row(
        line=record.line,
        fields=fields,
        split=formats.split_of(record.fields),
        content_hash=content_hash(fields),
    )


def _longest_field(fmt: str) -> str:
    return formats.REQUIRED[fmt][-1]


def render(fmt: str, fields: dict, tokenizer) -> str:
    """The text a model sees for this example, through its chat template when it has one."""
    if fmt in (DataFormat.COMPLETION,) or not getattr(tokenizer, "chat_template", None):
        prompt, reference = formats.prompt_and_reference(fmt, fields)
        return f"{prompt}\n{reference}"
    return tokenizer.apply_chat_template(formats.to_messages(fmt, fields), tokenize=False)


def _token_lengths(fmt: str, rows: list[Row], tokenizer) -> list[int]:
    def count(texts):
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    lengths = count([render(fmt, row.fields, tokenizer) for row in rows])
    if fmt == DataFormat.PREFERENCE:  # the longer of the two answers decides
        rejected = count(
            [
                render(fmt, {**row.fields, "chosen": row.fields["rejected"]}, tokenizer)
                for row in rows
            ]
        )
        lengths = [max(a, b) for a, b in zip(lengths, rejected, strict=True)]
    return lengths


def assign_splits(
    rows: list[Row], *, seed: int, eval_fraction: float, test_fraction: float
) -> list[str]:
    """The file's split column where given, else a seeded hash of the content: the same
    example lands in the same split in every version, so eval sets stay comparable."""
    out = []
    for row in rows:
        if row.split:
            out.append(row.split)
            continue
        digest = hashlib.sha256(f"{seed}:{row.content_hash}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        out.append(
            Split.TEST
            if u < test_fraction
            else Split.EVAL
            if u < test_fraction + eval_fraction
            else Split.TRAIN
        )
    return out


def warnings_for(fmt: str, rows: list[Row], splits: list[str]) -> list[dict]:
    texts = [(row.line, row.content_hash, " ".join(_strings(row.fields))) for row in rows]
    prompts = [
        (row.line, split, formats.prompt_and_reference(fmt, row.fields)[0])
        for row, split in zip(rows, splits, strict=True)
    ]
    out = quality.too_few(len(rows)) + quality.duplicates(texts) + quality.split_overlap(prompts)
    if fmt == DataFormat.CLASSIFICATION:
        out += quality.label_imbalance([row.fields["label"] for row in rows])
    return out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
