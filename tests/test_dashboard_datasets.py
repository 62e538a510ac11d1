import io

from datasets_app.models import Dataset, DatasetVersion
from tests.data import examples, jsonl


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
