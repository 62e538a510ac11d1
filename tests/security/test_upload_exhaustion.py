"""Denial of service through uploads: a 600 MB body was read into memory before the size check,
and one 20 MB JSONL line took 110 s and 3.4 GB to tokenise. Bodies are bounded while they
stream in (413, in the JSON error shape for the API and as a form error in the dashboard), and
a field that cannot fit in max_length tokens is refused, by its line and field, before any
tokenising."""

import io

import pytest
from django.test import Client
from django.test.client import encode_multipart

from datasets_app import validation
from datasets_app.models import Dataset, DatasetVersion
from inference.base_models import load_tokenizer
from tests.support.data import examples, jsonl
from tests.support.probes import CountingInput

BOUNDARY = "BoUnDaRy"
CHUNK = 64 * 1024  # what Django's multipart parser reads at a time


@pytest.fixture
def dataset(team, owner):
    return Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)


def url(dataset) -> str:
    return f"/api/datasets/{dataset.pk}/versions"


def file_of(size: int) -> bytes:
    """Valid JSONL of exactly `size` bytes (blank lines are skipped)."""
    data = jsonl(examples("instruction", 5)).encode()
    assert len(data) <= size
    return data + b"\n" * (size - len(data))


def assert_413(response):
    assert response.status_code == 413, response.content
    body = response.json()
    assert "upload limit" in body["detail"]
    assert body["errors"][0]["field"] == "file"


def post_streamed(api, dataset, payload: bytes) -> tuple:
    body = encode_multipart(BOUNDARY, {"format": "auto", "file": named(payload)})
    stream = CountingInput(body)
    response = api.client.generic(
        "POST",
        url(dataset),
        body,
        f"multipart/form-data; boundary={BOUNDARY}",
        **{"wsgi.input": stream},
        **api._headers(),
    )
    return response, stream.bytes_read, len(body)


def named(data: bytes, name: str = "data.jsonl"):
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def test_a_file_at_the_limit_is_taken_and_one_byte_more_is_413(
    api, dataset, settings, isolated_artifacts
):
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    assert_413(api.upload(url(dataset), file_of(1001)))
    assert not DatasetVersion.objects.exists()
    assert not list(isolated_artifacts.rglob("*.*"))
    r = api.upload(url(dataset), file_of(1000))
    assert r.status_code == 201, r.content


def test_a_body_past_the_limit_is_not_read_to_its_end(api, dataset, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 100_000
    response, read, sent = post_streamed(api, dataset, b"x" * 3_000_000)
    assert_413(response)
    assert read < 100_000 + 3 * CHUNK < sent


def test_a_declared_length_past_the_limit_stops_before_the_file(api, dataset, settings):
    # Streaming alone would read the first 1 MB of the file before refusing it.
    settings.DATASET_MAX_UPLOAD_BYTES = 1_000_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response, read, sent = post_streamed(api, dataset, b"x" * 3_000_000)
    assert_413(response)
    assert read <= 2 * CHUNK


def test_the_dashboard_answers_with_its_form(owner, dataset, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.get(f"/datasets/{dataset.pk}/")
    token = client.cookies["csrftoken"].value
    r = client.post(
        f"/datasets/{dataset.pk}/upload/",
        {"csrfmiddlewaretoken": token, "file": named(file_of(1001)), "format": "auto"},
    )
    assert r.status_code == 413
    page = r.content.decode()
    assert "upload limit" in page and "Upload a new version" in page
    assert not DatasetVersion.objects.exists()


def test_a_json_body_past_its_limit_is_413_json(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = api.post("/api/teams", {"name": "x" * 2000})
    assert r.status_code == 413 and "detail" in r.json()


@pytest.fixture
def tokenised_lines(monkeypatch):
    """The lines the upload tokenises: the other lines are (their token lengths are reported
    with the rest of the problems), the lines that cannot fit never are."""
    seen: list[int] = []
    real = validation._token_lengths

    def spy(fmt, rows, tokenizer):
        seen.extend(row.line for row in rows)
        return real(fmt, rows, tokenizer)

    monkeypatch.setattr(validation, "_token_lengths", spy)
    return seen


def test_a_field_that_cannot_fit_is_refused_before_tokenising(
    api, dataset, tiny_model, tokenised_lines
):
    longest = validation.longest_token(load_tokenizer(tiny_model))
    rows = examples("instruction", 5)
    rows[1]["input"] = "z" * (16 * longest + 1)  # an optional field counts as well
    rows[2]["output"] = "x" * (16 * longest + 1)
    rows[4]["instruction"] = "y" * 2_000_000  # the report's line was 20 MB
    r = api.upload(url(dataset), jsonl(rows), max_length=16)
    assert r.status_code == 422, r.content
    by_characters = [
        (e["line"], e["field"])
        for e in r.json()["errors"]
        if "more than max_length 16 tokens can hold" in e["message"]
    ]
    assert by_characters == [(2, "input"), (3, "output"), (5, "instruction")]
    message = next(e["message"] for e in r.json()["errors"] if e["line"] == 3)
    assert message == (
        f"{16 * longest + 1:,} characters: more than max_length 16 tokens can hold "
        f"(at most {16 * longest:,} characters)"
    )
    # The other lines are tokenised, and their lengths reported in the same answer.
    assert sorted(tokenised_lines) == [1, 4]


def test_long_tokens_are_not_refused_by_an_average(api, dataset):
    # 30 tokens of 66 characters each: a bound of 8 characters a token would refuse this.
    rows = examples("instruction", 5)
    rows[0]["output"] = (" " + "=" * 65) * 30
    r = api.upload(url(dataset), jsonl(rows), max_length=80)
    assert r.status_code == 201, r.content


def test_max_length_is_bounded(api, dataset):
    r = api.upload(url(dataset), jsonl(examples("instruction", 5)), max_length=2**40)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "max_length"
