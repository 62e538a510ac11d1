"""Checks an upload completely before anything is stored: errors reject it with their line
and field; warnings are kept in the version's validation report."""

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache

from datasets_app import formats, parsing, quality
from datasets_app.models import DataFormat, Split
from finetune_hub.errors import FieldError, ServiceError
from finetune_hub.uploads import too_large

MAX_ERRORS_REPORTED = 200
MAX_LENGTH = 1_048_576  # tokens; the same bound as a run's max_length
TOKENIZE_BATCH = 64  # rows per tokenizer call: memory stays that of a batch, not the file's


@dataclass
class Row:
    line: int
    fields: dict
    split: str | None
    content_hash: str


@dataclass
class ValidatedUpload:
    format: str
    syntax: str  # "jsonl" or "csv"
    rows: list[Row]
    warnings: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def reject(errors: list[FieldError], what: str = "The file was rejected") -> ServiceError:
    """Every problem found, by line, the first MAX_ERRORS_REPORTED listed and the rest
    counted in the detail."""
    errors = sorted(errors, key=lambda e: e.line or 0)
    lines = {e.line for e in errors if e.line}
    where = f" on {len(lines)} line{'s' * (len(lines) != 1)}" if lines else ""
    listed = (
        f"; the first {MAX_ERRORS_REPORTED} are listed, {len(errors) - MAX_ERRORS_REPORTED} "
        "more are not"
        if len(errors) > MAX_ERRORS_REPORTED
        else ""
    )
    return ServiceError(
        detail=f"{what}: {len(errors)} problem{'s' * (len(errors) != 1)}{where}{listed}",
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
    if len(data) > max_bytes:  # the request's upload handler stopped it already
        raise too_large(max_bytes)
    text, errors = parsing.decode(data)
    if text is None:
        raise reject(errors)  # nothing past a byte that is not UTF-8 can be read
    syntax = parsing.syntax_of(filename, text)
    # Every stage runs on the lines the stages before it passed, and the problems of all
    # stages are reported together: JSON or CSV syntax, then fields, then length. One
    # upload shows them all, not one stage per round trip.
    records, problems = parsing.parse(syntax, text)
    records = _passed(records, problems)  # a CSV row with a bad JSON cell is read, then left
    if not records:
        raise reject(problems or [FieldError(field="file", message="The file holds no examples")])
    try:
        fmt = _format(fmt, task, records)
    except ServiceError as exc:  # no format: the fields cannot be checked
        raise reject(problems + exc.errors) from None
    problems += [e for r in records for e in formats.check(fmt, r.fields, r.line, labels)]
    records = _passed(records, problems)
    problems += _too_many_characters(fmt, records, tokenizer, max_length)
    records = _passed(records, problems)
    rows = [_row(fmt, r) for r in records]
    lengths = _token_lengths(fmt, rows, tokenizer) if rows else []
    problems += [
        FieldError(
            line=row.line,
            field=_longest_field(fmt),
            message=(f"{n} tokens, over max_length {max_length}"),
        )
        for row, n in zip(rows, lengths, strict=True)
        if n > max_length
    ]
    if problems:
        raise reject(problems)
    return ValidatedUpload(
        format=fmt,
        syntax=syntax,
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


def _passed(records: list, problems: list[FieldError]) -> list:
    """The records of lines with no problem so far."""
    bad = {e.line for e in problems}
    return [r for r in records if r.line not in bad]


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


@lru_cache(maxsize=8)
def longest_token(tokenizer) -> int:
    """Characters in the tokenizer's longest vocabulary entry (81 for SmolLM2's: a newline
    and 80 spaces)."""
    return max(map(len, tokenizer.get_vocab()))


def _too_many_characters(fmt: str, records, tokenizer, max_length: int) -> list[FieldError]:
    """Fields that cannot fit in max_length tokens, found without tokenising them: one token
    covers at most longest_token characters, so a field longer than max_length times that
    is over for certain, and refusing it is never a false refusal. (For byte-level BPE
    vocabularies, SmolLM2's among them, an entry's characters are its bytes, and text has no
    more characters than bytes.) An average such as 4 characters a token would refuse real
    data: a run of spaces or of "=" is one token. Tokenising is the expensive step (one
    20 MB line took 110 s and 3.4 GB), so what cannot fit is refused before it starts."""
    limit = max_length * longest_token(tokenizer)
    return [
        FieldError(
            line=record.line,
            field=name,
            message=(
                f"{size:,} characters: more than max_length {max_length} tokens can hold "
                f"(at most {limit:,} characters)"
            ),
        )
        for record in records
        for name, size in _text_sizes(fmt, record.fields)
        if size > limit
    ]


def _text_sizes(fmt: str, fields: dict):
    """(field, characters of text in it) for each field of the format (the rest is dropped)."""
    for name in formats.REQUIRED[fmt] + formats.OPTIONAL.get(fmt, ()):
        yield name, sum(len(text) for text in _strings(fields.get(name)))


def _token_lengths(fmt: str, rows: list[Row], tokenizer) -> list[int]:
    def count(texts):
        return [
            len(ids)
            for start in range(0, len(texts), TOKENIZE_BATCH)
            for ids in tokenizer(
                texts[start : start + TOKENIZE_BATCH],
                add_special_tokens=False,
                return_attention_mask=False,
            )["input_ids"]
        ]

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
