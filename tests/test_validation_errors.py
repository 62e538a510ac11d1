"""Every validation error an upload can raise, with its line (and field) asserted exactly, and
nothing stored: no version row, no example, no file."""

import json

import pytest

from datasets_app.models import Dataset, DatasetVersion, Example

CHAT_OK = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
)
PREF_OK = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def lines(*rows) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


CASES = [
    # (id, task, filename, content, format, [(line, field, message part)])
    (
        "csv-without-header",
        "instruction",
        "d.csv",
        "\n\n",
        "auto",
        [(1, None, "no header row")],
    ),
    (
        "csv-extra-cells",
        "instruction",
        "d.csv",
        "instruction,output\na,b\nc,d,e\nf,g\n",
        "auto",
        [(3, None, "More cells than header columns")],
    ),
    (
        "csv-invalid",
        "instruction",
        "d.csv",
        "instruction,output\na,b\n" + '"' + "x" * 140_000 + '",y\n',
        "auto",
        [(3, None, "Invalid CSV: field larger than field limit")],
    ),
    (
        "csv-bad-json-cell",
        "chat",
        "d.csv",
        'messages\n"[{""role"": ""user""}"\n',
        "auto",
        [(2, "messages", "Invalid JSON")],
    ),
    (
        "jsonl-line-not-an-object",
        "instruction",
        "d.jsonl",
        lines({"instruction": "a", "output": "b"}, "[1, 2]", '"text"'),
        "auto",
        [(2, None, "must be a JSON object"), (3, None, "must be a JSON object")],
    ),
    (
        "jsonl-invalid-json",
        "instruction",
        "d.jsonl",
        lines({"instruction": "a", "output": "b"}, '{"instruction": "a",'),
        "auto",
        [(2, None, "Invalid JSON")],
    ),
    ("empty-file", "instruction", "d.jsonl", "", "auto", [(None, "file", "holds no examples")]),
    (
        "blank-lines-only",
        "instruction",
        "d.jsonl",
        "\n  \n\n",
        "auto",
        [(None, "file", "holds no examples")],
    ),
    (
        "unknown-format",
        "instruction",
        "d.jsonl",
        lines({"instruction": "a", "output": "b"}),
        "poetry",
        [(None, "format", "Unknown format 'poetry'")],
    ),
    (
        "undetectable-format",
        "instruction",
        "d.jsonl",
        lines({"question": "a", "answer": "b"}),
        "auto",
        [(1, "format", "Cannot tell the format")],
    ),
    (
        "chosen-equals-rejected",
        "preference",
        "d.jsonl",
        lines(PREF_OK, {"prompt": "p", "chosen": "same", "rejected": "same"}),
        "auto",
        [(2, "rejected", "chosen and rejected are the same text")],
    ),
    (
        "messages-not-a-list",
        "chat",
        "d.jsonl",
        lines(CHAT_OK, {"messages": "hello"}),
        "chat",
        [(2, "messages", "must be a non-empty list")],
    ),
    (
        "messages-item-not-an-object",
        "chat",
        "d.jsonl",
        lines(CHAT_OK, {"messages": ["hello"]}),
        "chat",
        [(2, "messages", "messages[0] must be an object")],
    ),
    (
        "messages-empty-content",
        "chat",
        "d.jsonl",
        lines(
            CHAT_OK,
            CHAT_OK,
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},
        ),
        "chat",
        [(3, "messages", "messages[0].content")],
    ),
    (
        "messages-system-not-first",
        "chat",
        "d.jsonl",
        lines(
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        ),
        "chat",
        [(1, "messages", "A system message may only come first")],
    ),
    (
        "messages-ends-with-user",
        "chat",
        "d.jsonl",
        lines(CHAT_OK, {"messages": [{"role": "user", "content": "a"}]}),
        "chat",
        [(2, "messages", "must end with an assistant message")],
    ),
    (
        "invalid-utf8",
        "instruction",
        "d.jsonl",
        b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "b"}\n',
        "auto",
        [(2, None, "Not valid UTF-8")],
    ),
]


@pytest.mark.parametrize(
    "task, filename, content, fmt, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_validation_error_names_its_line_and_stores_nothing(
    api, team, owner, isolated_artifacts, task, filename, content, fmt, expected
):
    dataset = Dataset.objects.create(team=team, name="d", task=task, created_by=owner)
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", content, filename=filename, format=fmt)
    assert r.status_code == 422, r.content
    errors = r.json()["errors"]
    got = [(e.get("line"), e.get("field")) for e in errors]
    assert got == [(line, field) for line, field, _ in expected], errors
    for error, (_, _, message) in zip(errors, expected, strict=True):
        assert message in error["message"], error
    assert not DatasetVersion.objects.exists() and not Example.objects.exists()
    assert not any(p.is_file() for p in isolated_artifacts.rglob("*"))
