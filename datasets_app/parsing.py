"""Bytes of an uploaded file -> (line number, record) pairs, or line-level errors."""

import csv
import io
import json
from dataclasses import dataclass

from finetune_hub.bounds import JSONTooDeep, json_loads
from finetune_hub.errors import FieldError

JSON_COLUMNS = ("messages",)  # CSV cells that hold JSON structures


@dataclass
class Record:
    line: int
    fields: dict


def decode(data: bytes) -> tuple[str | None, list[FieldError]]:
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [FieldError(line=line, message=f"Not valid UTF-8 (byte {exc.start})")]


def looks_like_csv(filename: str, text: str) -> bool:
    if filename.lower().endswith(".csv"):
        return True
    if filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        return False
    return not text.lstrip().startswith(("{", "["))


def syntax_of(filename: str, text: str) -> str:
    """The syntax the file is read as, csv or jsonl, and the extension it is stored under."""
    return "csv" if looks_like_csv(filename, text) else "jsonl"


def parse(syntax: str, text: str) -> tuple[list[Record], list[FieldError]]:
    return parse_csv(text) if syntax == "csv" else parse_jsonl(text)


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, JSONTooDeep):
        return str(exc)
    return f"Invalid JSON: {exc.msg} (column {exc.colno})"


def parse_jsonl(text: str) -> tuple[list[Record], list[FieldError]]:
    records, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json_loads(line)
        except (json.JSONDecodeError, JSONTooDeep) as exc:
            errors.append(FieldError(line=number, message=_json_problem(exc)))
            continue
        if not isinstance(value, dict):
            errors.append(FieldError(line=number, message="Each line must be a JSON object"))
            continue
        records.append(Record(line=number, fields=value))
    return records, errors


def parse_csv(text: str) -> tuple[list[Record], list[FieldError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records, errors = [], []
    if not reader.fieldnames:
        return [], [FieldError(line=1, message="The CSV file has no header row")]
    start = reader.line_num + 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if None in row:
                errors.append(FieldError(line=line, message="More cells than header columns"))
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            records.append(Record(line=line, fields=_csv_fields(row, line, errors)))
    except csv.Error as exc:
        # The record that failed starts where the last good one ended, not at line_num.
        errors.append(FieldError(line=start, message=f"Invalid CSV: {exc}"))
    return records, errors


def _csv_fields(row: dict, line: int, errors: list[FieldError]) -> dict:
    fields = {k.strip(): v for k, v in row.items() if k is not None}
    for column in JSON_COLUMNS:
        if fields.get(column):
            try:
                fields[column] = json_loads(fields[column])
            except (json.JSONDecodeError, JSONTooDeep) as exc:
                errors.append(FieldError(line=line, field=column, message=_json_problem(exc)))
    return fields
