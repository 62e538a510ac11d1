"""An outsider gets 404 on every dataset endpoint and page; nothing of the team leaks."""

import pytest

from datasets_app.models import Dataset, DatasetVersion
from tests.support.data import examples, jsonl


@pytest.fixture
def version(api, team, owner):
    dataset = Dataset.objects.create(
        team=team, name="private", task="instruction", created_by=owner
    )
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", jsonl(examples("instruction")))
    assert r.status_code == 201
    return DatasetVersion.objects.get(dataset=dataset, number=1)


def test_it_validates_ownership(outsider_api, version):
    d = version.dataset_id
    for path in [
        f"/api/datasets/{d}",
        f"/api/datasets/{d}/versions/1",
        f"/api/datasets/{d}/versions/1/examples",
        f"/api/datasets/{d}/diff?a=1&b=1",
    ]:
        r = outsider_api.get(path)
        assert r.status_code == 404, path
        assert "private" not in r.content.decode()
    r = outsider_api.upload(f"/api/datasets/{d}/versions", jsonl(examples("instruction", 101)))
    assert r.status_code == 404
    assert outsider_api.get("/api/datasets").json() == []
    assert DatasetVersion.objects.filter(dataset_id=d).count() == 1


def test_outsider_cannot_create_a_dataset_in_the_team(outsider_api, team):
    r = outsider_api.post("/api/datasets", {"team": team.pk, "name": "x", "task": "chat"})
    assert r.status_code == 404
    assert not Dataset.objects.filter(name="x").exists()


def test_viewer_reads_but_cannot_upload(version, team):
    from finetune_hub.models import Membership, Role
    from tests.support.clients import ApiClient, make_user

    viewer = make_user("viewer")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    client = ApiClient(viewer)
    d = version.dataset_id
    assert client.get(f"/api/datasets/{d}/versions/1").status_code == 200
    r = client.upload(f"/api/datasets/{d}/versions", jsonl(examples("instruction", 101)))
    assert r.status_code == 403


def test_dataset_pages_for_owner_and_outsider(browser_client, outsider, version):
    d = version.dataset_id
    pages = [f"/datasets/{d}/", f"/datasets/{d}/v/1/", f"/datasets/{d}/diff/?a=1&b=1"]
    for path in pages:
        assert browser_client.get(path).status_code == 200, path
    browser_client.force_login(outsider)
    for path in pages:
        assert browser_client.get(path).status_code == 404, path
    assert browser_client.post(f"/datasets/{d}/v/1/annotate/").status_code == 404
