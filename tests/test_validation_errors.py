"""Every validation error an upload can raise, with its line (and field) asserted exactly, and
nothing stored: no version row, no example, no file."""

import json

import pytest

from datasets_app.models import Dataset, DatasetVersion, Example

UNQUOTED = "Invalid JSON: Expecting property name enclosed in double quotes"
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
        [(1, None, "The CSV file has no header row")],
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
        [(3, None, "Invalid CSV: field larger than field limit (131072)")],
    ),
    (
        "csv-bad-json-cell",
        "chat",
        "d.csv",
        'messages\n"[{""role"": ""user""}"\n',
        "auto",
        [(2, "messages", "Invalid JSON: Expecting ',' delimiter (column 18)")],
    ),
    (
        "jsonl-line-not-an-object",
        "instruction",
        "d.jsonl",
        lines({"instruction": "a", "output": "b"}, "[1, 2]", '"text"'),
        "auto",
        [
            (2, None, "Each line must be a JSON object"),
            (3, None, "Each line must be a JSON object"),
        ],
    ),
    (
        "jsonl-invalid-json",
        "instruction",
        "d.jsonl",
        lines({"instruction": "a", "output": "b"}, '{"instruction": "a",'),
        "auto",
        [(2, None, "Invalid JSON: Expecting property name enclosed in double quotes (column 21)")],
    ),
    (
        # Every broken line is reported in one pass, not only the first.
        "jsonl-invalid-json-twice",
        "instruction",
        "d.jsonl",
        lines('{"instruction": "a",', {"instruction": "a", "output": "b"}, "{oops"),
        "auto",
        [
            (1, None, f"{UNQUOTED} (column 21)"),
            (3, None, f"{UNQUOTED} (column 2)"),
        ],
    ),
    (
        "empty-file",
        "instruction",
        "d.jsonl",
        "",
        "auto",
        [(None, "file", "The file holds no examples")],
    ),
    (
        "blank-lines-only",
        "instruction",
        "d.jsonl",
        "\n  \n\n",
        "auto",
        [(None, "file", "The file holds no examples")],
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
        [
            (
                1,
                "format",
                "Cannot tell the format from the fields answer, question; expected "
                "instruction/input/output, messages, prompt/completion, text/label or "
                "prompt/chosen/rejected",
            )
        ],
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
        [(2, "messages", "messages must be a non-empty list of {role, content}")],
    ),
    (
        "messages-item-not-an-object",
        "chat",
        "d.jsonl",
        lines(CHAT_OK, {"messages": ["hello"]}),
        "chat",
        [(2, "messages", "messages[0] must be an object with role and content")],
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
        [(3, "messages", "messages[0].content: Empty field")],
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
        [(2, "messages", "The conversation must end with an assistant message")],
    ),
    (
        "invalid-utf8",
        "instruction",
        "d.jsonl",
        b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "b"}\n',
        "auto",
        [(2, None, "Not valid UTF-8 (byte 53)")],
    ),
    (
        "messages-unknown-role",
        "chat",
        "d.jsonl",
        lines({"messages": [{"role": "bot", "content": "hi"}]}),
        "auto",
        [(1, "messages", "messages[0] has role 'bot'; roles are system, user, assistant")],
    ),
    (
        "messages-unknown-key",
        "chat",
        "d.jsonl",
        lines({"messages": [{"role": "user", "content": "hi", "tool": "x"}]}),
        "auto",
        [(1, "messages", "messages[0] must be an object with role and content")],
    ),
    (
        "messages-not-alternating",
        "chat",
        "d.jsonl",
        lines(
            CHAT_OK,
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            },
        ),
        "auto",
        [(2, "messages", "Roles must alternate user, assistant, ... starting with user")],
    ),
    (
        "csv-problems-after-a-bad-row-are-still-found",
        "instruction",
        "d.csv",
        "instruction,output\na,b\nc,d,e\nf,g\nh,i,j\n",
        "auto",
        [(3, None, "More cells than header columns"), (5, None, "More cells than header columns")],
    ),
    (
        "csv-json-cell-too-deep",
        "chat",
        "d.csv",
        'messages\n"' + "[" * 70 + "]" * 70 + '"\n',
        "auto",
        [(2, "messages", "JSON nested deeper than 64 levels")],
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
    assert [e["message"] for e in errors] == [message for _, _, message in expected]
    # The summary counts problems and the distinct lines they are on.
    problems, on = len(expected), {line for line, _, _ in expected if line}
    where = f" on {len(on)} line{'s' * (len(on) != 1)}" if on else ""
    summary = f"The file was rejected: {problems} problem{'s' * (problems != 1)}{where}"
    assert r.json()["detail"] == summary
    assert not DatasetVersion.objects.exists() and not Example.objects.exists()
    assert not any(p.is_file() for p in isolated_artifacts.rglob("*"))


def test_long_conversations_with_names_and_a_system_prompt_are_accepted(api, team, owner):
    turns = [{"role": "system", "content": "Be brief.", "name": "setup"}]
    for i in range(4):  # 8 alternating turns
        turns += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    dataset = Dataset.objects.create(team=team, name="d", task="chat", created_by=owner)
    r = api.upload(
        f"/api/datasets/{dataset.pk}/versions", lines({"messages": turns}, CHAT_OK), "d.jsonl"
    )
    assert r.status_code == 201, r.content
    assert Example.objects.count() == 2


def test_several_problems_on_one_line_are_counted_as_problems_not_lines(api, team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="preference", created_by=owner)
    bad = {"prompt": "", "chosen": "", "rejected": "x"}
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", lines(bad), "d.jsonl")
    assert r.status_code == 422
    assert r.json()["detail"] == "The file was rejected: 2 problems on 1 line"
    assert [(e["line"], e["field"]) for e in r.json()["errors"]] == [(1, "prompt"), (1, "chosen")]


def test_empty_csv_rows_are_skipped_not_the_end_of_the_file(api, team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)
    text = 'instruction,output\na,b\n,\n""\nc,d\n'
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", text, "d.csv")
    assert r.status_code == 201, r.content
    assert [e.fields["instruction"] for e in Example.objects.order_by("position")] == ["a", "c"]


def test_blank_jsonl_lines_are_skipped_not_the_end_of_the_file(api, team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)
    text = lines(
        {"instruction": "a", "output": "b"}, "", "   ", {"instruction": "c", "output": "d"}
    )
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", text, "d.jsonl")
    assert r.status_code == 201, r.content
    assert [e.fields["instruction"] for e in Example.objects.order_by("position")] == ["a", "c"]


def test_problems_are_listed_file_level_first_then_by_line_and_capped():
    """The file's own problems (no line) come first, then by line; exactly 200 are listed in
    full, and past that the detail counts what is not listed."""
    from datasets_app.validation import MAX_ERRORS_REPORTED, reject
    from finetune_hub.errors import FieldError

    refused = reject(
        [
            FieldError(line=3, field="a", message="third"),
            FieldError(line=1, field="b", message="first"),
            FieldError(line=None, field=None, message="the file"),
        ]
    )
    assert [(e.line, e.message) for e in refused.errors] == [
        (None, "the file"),
        (1, "first"),
        (3, "third"),
    ]
    assert (refused.status, refused.detail) == (422, "The file was rejected: 3 problems on 2 lines")

    def problems(n):
        return [FieldError(line=i, field="f", message="m") for i in range(1, n + 1)]

    exactly = reject(problems(MAX_ERRORS_REPORTED))
    assert exactly.detail == "The file was rejected: 200 problems on 200 lines"
    assert len(exactly.errors) == 200
    over = reject(problems(MAX_ERRORS_REPORTED + 1))
    assert over.detail == (
        "The file was rejected: 201 problems on 201 lines; the first 200 are listed, 1 more are not"
    )
    assert [e.line for e in over.errors] == list(range(1, 201))
