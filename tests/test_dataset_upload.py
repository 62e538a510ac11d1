import json

import pytest

from datasets_app.models import Dataset, DatasetVersion, Example
from tests.support.data import as_csv, examples, jsonl, record

FORMATS = ["instruction", "chat", "completion", "classification", "preference"]


@pytest.fixture
def make_dataset(team, owner):
    def make(task="instruction", labels=()):
        return Dataset.objects.create(
            team=team,
            name=f"ds-{task}-{Dataset.objects.count()}",
            task=task,
            labels=list(labels),
            created_by=owner,
        )

    return make


def upload_url(dataset):
    return f"/api/datasets/{dataset.pk}/versions"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_each_format_uploads_from_jsonl_and_csv(api, make_dataset, fmt, kind):
    dataset = make_dataset(fmt)
    rows = examples(fmt)
    content = jsonl(rows) if kind == "jsonl" else as_csv(rows)
    r = api.upload(upload_url(dataset), content, filename=f"data.{kind}", format="auto")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["format"] == fmt
    assert body["number"] == 1
    assert body["size"] == 120
    assert sum(body["counts"].values()) == 120
    assert len(body["sha256"]) == 64
    assert Example.objects.filter(version__dataset=dataset).count() == 120
    assert body["warnings"] == []


def test_same_content_as_csv_or_jsonl_hashes_the_same(api, make_dataset, team, owner):
    a, b = make_dataset("chat"), make_dataset("chat")
    rows = examples("chat")
    r1 = api.upload(upload_url(a), jsonl(rows), filename="x.jsonl")
    r2 = api.upload(upload_url(b), as_csv(rows).replace("\n", "\r\n"), filename="x.csv")
    assert r1.json()["sha256"] == r2.json()["sha256"]


def test_explicit_format_must_match_task(api, make_dataset):
    dataset = make_dataset("completion")
    r = api.upload(upload_url(dataset), jsonl(examples("instruction")), format="instruction")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "format"


def errors_of(response):
    assert response.status_code == 422, response.content
    body = response.json()
    assert "detail" in body
    return [(e.get("line"), e.get("field"), e["message"]) for e in body["errors"]]


def assert_nothing_stored(dataset, artifact_root):
    assert not DatasetVersion.objects.filter(dataset=dataset).exists()
    assert not Example.objects.filter(version__dataset=dataset).exists()
    assert not list(artifact_root.rglob("*")) if artifact_root.exists() else True


def test_invalid_json_names_the_line(api, make_dataset, isolated_artifacts):
    dataset = make_dataset()
    lines = jsonl(examples("instruction", 5)).splitlines()
    lines[2] = '{"instruction": "x", "output": '
    errors = errors_of(api.upload(upload_url(dataset), "\n".join(lines)))
    assert errors[0][0] == 3 and "Invalid JSON" in errors[0][2]
    assert_nothing_stored(dataset, isolated_artifacts)


def test_invalid_utf8_names_the_line(api, make_dataset, isolated_artifacts):
    dataset = make_dataset()
    data = (
        jsonl(examples("instruction", 3)).encode() + b'{"instruction": "\xff\xfe", "output": "o"}\n'
    )
    errors = errors_of(api.upload(upload_url(dataset), data))
    assert errors[0][0] == 4 and "UTF-8" in errors[0][2]
    assert_nothing_stored(dataset, isolated_artifacts)


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"instruction": "Do it"}, "output", "Missing field"),
        ({"instruction": "Do it", "output": "   "}, "output", "Empty field"),
        ({"instruction": 5, "output": "x"}, "instruction", "Must be text"),
    ],
)
def test_missing_or_empty_fields(api, make_dataset, isolated_artifacts, fields, field, message):
    dataset = make_dataset()
    rows = examples("instruction", 6)
    rows[4] = fields
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows), format="instruction"))
    assert (5, field, message) in [(line, f, m[: len(message)]) for line, f, m in errors]
    assert_nothing_stored(dataset, isolated_artifacts)


@pytest.mark.parametrize(
    "messages, expected",
    [
        (
            [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}],
            "role 'robot'",
        ),
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], "alternate"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
        ([{"role": "user", "content": "a"}], "end with an assistant"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "system", "content": "c"},
            ],
            "system message may only come first",
        ),
        ([{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}], "Empty field"),
    ],
)
def test_wrong_roles_or_role_order(api, make_dataset, messages, expected):
    dataset = make_dataset("chat")
    rows = examples("chat", 4)
    rows[1] = {"messages": messages}
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows)))
    assert len(errors) == 1
    line, field, message = errors[0]
    assert (line, field) == (2, "messages") and expected in message


def test_unknown_labels(api, make_dataset, isolated_artifacts):
    dataset = make_dataset("classification", labels=["pos", "neg"])
    rows = examples("classification", 8)
    rows[6] = {"text": "something", "label": "neutral"}
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows)))
    assert errors == [(7, "label", "Unknown label 'neutral'; the dataset's labels are pos, neg")]
    assert_nothing_stored(dataset, isolated_artifacts)


def test_over_long_examples_count_tokens(api, make_dataset, isolated_artifacts):
    dataset = make_dataset()
    rows = examples("instruction", 5)
    rows[3] = {"instruction": "Repeat", "output": "word " * 200}
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows), max_length=128))
    assert len(errors) == 1
    line, field, message = errors[0]
    # Counted on the text the model sees: the chat template's tokens included, no BOS added.
    assert (line, field, message) == (
        4,
        "output",
        f"{chat_tokens(rows[3])} tokens, over max_length 128",
    )
    assert_nothing_stored(dataset, isolated_artifacts)


def chat_tokens(fields: dict) -> int:
    """Tokens of the example through the tiny model's chat template (SmolLM2's)."""
    from django.conf import settings
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.DEFAULT_BASE_MODEL)
    messages = [
        {"role": "user", "content": fields.get("instruction") or fields["prompt"]},
        {"role": "assistant", "content": fields.get("output") or fields["rejected"]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_preference_example_is_as_long_as_its_longer_answer(
    api, make_dataset, isolated_artifacts
):
    """The rejected answer counts too: a short chosen does not let a long rejected through."""
    dataset = make_dataset("preference")
    rows = examples("preference", 5)
    rows[2] = {"prompt": "Say it", "chosen": "ok", "rejected": "no " * 150}
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows), max_length=128))
    assert errors == [(3, "rejected", f"{chat_tokens(rows[2])} tokens, over max_length 128")]
    assert_nothing_stored(dataset, isolated_artifacts)


def test_file_over_the_size_limit(api, make_dataset, settings, isolated_artifacts):
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    dataset = make_dataset()
    r = api.upload(upload_url(dataset), jsonl(examples("instruction", 50)))
    assert r.status_code == 413, r.content
    error = r.json()["errors"][0]
    assert error["field"] == "file" and "limit is 1,000" in error["message"]
    assert_nothing_stored(dataset, isolated_artifacts)


def test_unknown_format_fields_are_reported(api, make_dataset):
    dataset = make_dataset()
    errors = errors_of(api.upload(upload_url(dataset), jsonl([{"question": "q", "answer": "a"}])))
    assert errors[0][:2] == (1, "format") and "Cannot tell the format" in errors[0][2]


def test_errors_report_every_bad_line(api, make_dataset):
    dataset = make_dataset()
    rows = examples("instruction", 10)
    for i in (2, 5, 8):
        rows[i] = {"instruction": "x"}
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows)))
    assert [e[0] for e in errors] == [3, 6, 9]


def test_warnings_are_stored_not_fatal(api, make_dataset):
    dataset = make_dataset("classification")
    rows = examples("classification", 40)
    rows += [rows[0], rows[1]]  # exact duplicates
    rows.append({**rows[2], "text": rows[2]["text"].upper() + "!"})  # near duplicate
    rows += [{"text": r["text"], "label": "pos"} for r in examples("classification", 140)[40:]]
    r = api.upload(upload_url(dataset), jsonl(rows))
    assert r.status_code == 201, r.content
    codes = {w["code"]: w for w in r.json()["warnings"]}
    assert set(codes) >= {"exact_duplicates", "near_duplicates", "label_imbalance"}
    assert "few_examples" not in codes
    assert "'pos' has 122 examples, 'neg' only 21" in codes["label_imbalance"]["message"]
    assert codes["exact_duplicates"]["lines"] == [41, 42]
    assert 43 in codes["near_duplicates"]["lines"]


def test_fewer_than_100_examples_is_a_warning(api, make_dataset):
    r = api.upload(upload_url(make_dataset()), jsonl(examples("instruction", 99)))
    assert r.status_code == 201
    assert [w["code"] for w in r.json()["warnings"]] == ["few_examples"]


def test_train_eval_overlap_warning(api, make_dataset):
    dataset = make_dataset("completion")
    rows = examples("completion", 120)
    rows[0]["split"] = "train"
    rows.append({"prompt": rows[0]["prompt"], "completion": "different", "split": "eval"})
    r = api.upload(upload_url(dataset), jsonl(rows))
    assert r.status_code == 201
    overlap = [w for w in r.json()["warnings"] if w["code"] == "train_eval_overlap"]
    assert overlap and overlap[0]["lines"] == [121]


def test_split_is_deterministic_and_follows_the_seed(api, make_dataset):
    rows = examples("completion", 200)
    a, b, c = make_dataset("completion"), make_dataset("completion"), make_dataset("completion")
    ra = api.upload(upload_url(a), jsonl(rows), seed=7).json()
    rb = api.upload(upload_url(b), jsonl(rows), seed=7).json()
    rc = api.upload(upload_url(c), jsonl(rows), seed=8).json()
    splits = [
        list(
            Example.objects.filter(version__dataset=d)
            .order_by("position")
            .values_list("split", flat=True)
        )
        for d in (a, b, c)
    ]
    assert splits[0] == splits[1] and ra["counts"] == rb["counts"]
    assert splits[0] != splits[2]
    assert 120 < ra["counts"]["train"] < 190 and ra["counts"]["eval"] > 5
    assert rc["counts"] != {}


def test_split_column_is_respected(api, make_dataset):
    dataset = make_dataset("completion")
    rows = [
        {**r, "split": ["train", "validation", "test"][i % 3]}
        for i, r in enumerate(examples("completion", 120))
    ]
    body = api.upload(upload_url(dataset), jsonl(rows)).json()
    assert body["counts"] == {"train": 40, "eval": 40, "test": 40}


def test_unknown_split_value_is_an_error(api, make_dataset):
    dataset = make_dataset("completion")
    rows = examples("completion", 3)
    rows[0]["split"] = "holdout"
    errors = errors_of(api.upload(upload_url(dataset), jsonl(rows)))
    assert errors[0][:2] == (1, "split")


def test_versions_are_numbered_and_identical_content_is_refused(api, make_dataset):
    dataset = make_dataset()
    rows = examples("instruction")
    assert api.upload(upload_url(dataset), jsonl(rows)).json()["number"] == 1
    again = api.upload(upload_url(dataset), jsonl(rows))
    assert again.status_code == 409 and "identical to version 1" in again.json()["detail"]
    assert api.upload(upload_url(dataset), jsonl(rows[:-1])).json()["number"] == 2
    detail = api.get(f"/api/datasets/{dataset.pk}/versions/2").json()
    assert detail["size"] == 119


def test_stored_file_is_under_the_artifact_root(api, make_dataset, isolated_artifacts):
    dataset = make_dataset()
    api.upload(upload_url(dataset), jsonl(examples("instruction")), filename="../../evil.jsonl")
    version = DatasetVersion.objects.get(dataset=dataset)
    stored = (isolated_artifacts / version.source_path).resolve()
    assert stored.is_file() and isolated_artifacts in stored.parents
    assert version.source_filename == "evil.jsonl"


def test_examples_endpoint_filters_and_pages(api, make_dataset):
    dataset = make_dataset("completion")
    rows = [
        {**r, "split": "eval" if i < 60 else "train"}
        for i, r in enumerate(examples("completion", 120))
    ]
    api.upload(upload_url(dataset), jsonl(rows))
    page = api.get(f"/api/datasets/{dataset.pk}/versions/1/examples", split="eval").json()
    assert page["count"] == 60 and page["pages"] == 2 and len(page["results"]) == 50
    assert {e["split"] for e in page["results"]} == {"eval"}
    second = api.get(f"/api/datasets/{dataset.pk}/versions/1/examples", split="eval", page=2)
    assert len(second.json()["results"]) == 10
    assert page["results"][0]["fields"] == {
        "prompt": rows[0]["prompt"],
        "completion": rows[0]["completion"],
    }


def test_diff_between_versions(api, make_dataset):
    dataset = make_dataset("instruction")
    rows = examples("instruction", 110)
    api.upload(upload_url(dataset), jsonl(rows))
    changed = [dict(r) for r in rows]
    changed[0]["output"] = "a corrected answer"
    del changed[1]
    changed.append(record("instruction", 500))
    api.upload(upload_url(dataset), jsonl(changed))
    diff = api.get(f"/api/datasets/{dataset.pk}/diff", a=1, b=2).json()
    assert diff["counts"] == {"added": 1, "removed": 1, "changed": 1, "unchanged": 108}
    assert diff["changed"][0]["after"]["fields"]["output"] == "a corrected answer"
    assert diff["removed"][0]["fields"]["instruction"] == rows[1]["instruction"]


def test_create_dataset_validates_fields(api, team):
    r = api.post("/api/datasets", {"team": team.pk, "name": "x", "task": "poetry"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "task"
    r = api.post("/api/datasets", {"team": team.pk, "name": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "task"
    ok = api.post("/api/datasets", {"team": team.pk, "name": "x", "task": "chat"})
    assert ok.status_code == 201
    dup = api.post("/api/datasets", {"team": team.pk, "name": "x", "task": "chat"})
    assert dup.status_code == 409
    listed = api.get("/api/datasets", team=team.pk).json()
    assert [d["name"] for d in listed] == ["x"]
    assert json.loads(json.dumps(listed))[0]["versions"] == []


def test_one_upload_reports_the_problems_of_every_stage_together(
    api, make_dataset, isolated_artifacts
):
    """Syntax, fields and length in one answer, by line: not three round trips."""
    dataset = make_dataset()
    rows = [json.dumps(r) for r in examples("instruction", 8)]
    rows[1] = '{"instruction": "broken", '  # syntax
    rows[3] = json.dumps({"instruction": "no output"})  # fields
    rows[5] = json.dumps({"instruction": "Repeat", "output": "word " * 200})  # length
    response = api.upload(upload_url(dataset), "\n".join(rows) + "\n", max_length=128)
    errors = errors_of(response)
    assert [(line, field) for line, field, _ in errors] == [(2, None), (4, "output"), (6, "output")]
    assert "3 problems on 3 lines" in response.json()["detail"]
    assert_nothing_stored(dataset, isolated_artifacts)


def test_a_file_full_of_problems_lists_the_first_200_and_counts_the_rest(
    api, make_dataset, isolated_artifacts
):
    dataset = make_dataset()
    rows = [json.dumps({"instruction": f"q{i}"}) for i in range(250)]
    response = api.upload(upload_url(dataset), "\n".join(rows) + "\n", format="instruction")
    errors = errors_of(response)
    assert len(errors) == 200 and errors[0][0] == 1 and errors[-1][0] == 200
    assert (
        "250 problems on 250 lines; the first 200 are listed, 50 more are not"
        in (response.json()["detail"])
    )
    assert_nothing_stored(dataset, isolated_artifacts)
