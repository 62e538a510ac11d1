import io

from datasets_app.models import Dataset, DatasetVersion
from tests.support.data import examples, jsonl


def upload(client, dataset, content: str, name="data.jsonl", **fields):
    f = io.BytesIO(content.encode())
    f.name = name
    return client.post(f"/datasets/{dataset.pk}/upload/", {"file": f, "format": "auto", **fields})


def test_create_dataset_and_upload_from_the_dashboard(browser_client, team):
    r = browser_client.post("/datasets/new/", {"team": team.pk, "name": "faq", "task": "chat"})
    dataset = Dataset.objects.get(name="faq")
    assert r.status_code == 302 and r["Location"] == f"/datasets/{dataset.pk}/"
    r = upload(browser_client, dataset, jsonl(examples("chat")), message="first")
    assert r.status_code == 302 and r["Location"] == f"/datasets/{dataset.pk}/v/1/"
    page = browser_client.get(r["Location"])
    assert page.status_code == 200 and "120" in page.content.decode()
    listing = browser_client.get("/datasets/").content.decode()
    assert "faq" in listing


def test_rejected_upload_shows_line_errors_and_stores_nothing(browser_client, team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)
    rows = examples("instruction", 5)
    rows[3] = {"instruction": "no answer"}
    r = upload(browser_client, dataset, jsonl(rows))
    html = r.content.decode()
    assert r.status_code == 422
    assert "<td>4</td><td>output</td>" in html and "Missing field" in html
    assert not DatasetVersion.objects.filter(dataset=dataset).exists()


def test_form_errors_are_4xx(browser_client, team, owner):
    dataset = Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)
    assert browser_client.post(f"/datasets/{dataset.pk}/upload/", {}).status_code == 400
    r = upload(browser_client, dataset, jsonl(examples("instruction")), max_length="many")
    assert r.status_code == 400
    r = browser_client.post("/datasets/new/", {"team": team.pk, "name": "", "task": "chat"})
    assert r.status_code == 400
    assert browser_client.get(f"/datasets/{dataset.pk}/diff/?a=x&b=1").status_code == 200


def test_the_version_diff_marks_the_changed_field_and_its_words(browser_client, team, owner):
    from datasets_app import annotation
    from tests.support.training_helpers import make_version

    first = make_version(team, owner, n=20)
    draft = annotation.draft_create(version=first, by=owner)
    example = draft.examples.get(position=4)
    fields = {**example.fields, "output": example.fields["output"] + " and a fixed ending"}
    annotation.example_edit(example=example, fields=fields, by=owner)
    annotation.draft_publish(draft=draft, message="fix", by=owner)
    page = browser_client.get(f"/datasets/{first.dataset_id}/diff/", {"a": 1, "b": 2})
    html = page.content.decode()
    rows = html.split('<table id="changed">')[1].split("</table>")[0]
    assert rows.count('class="field-changed"') == 1  # output only
    assert 'class="field-same"' in rows  # the instruction, unchanged, not marked
    assert "<ins>and a fixed ending</ins>" in rows and "<del>" not in rows
