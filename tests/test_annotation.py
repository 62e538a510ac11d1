import pytest
from django.test import Client

from datasets_app import annotation
from datasets_app.models import Dataset, DatasetVersion, Example
from finetune_hub.errors import ServiceError
from tests.support.data import examples, jsonl


@pytest.fixture
def version(api, team, owner):
    dataset = Dataset.objects.create(
        team=team, name="labels", task="classification", labels=["pos", "neg"], created_by=owner
    )
    api.upload(f"/api/datasets/{dataset.pk}/versions", jsonl(examples("classification")))
    return DatasetVersion.objects.get(dataset=dataset, number=1)


@pytest.fixture
def staff(owner, reviewer, member):
    for user in (owner, reviewer, member):
        user.is_staff = True
        user.save()
    return owner


def admin_client(user):
    client = Client()
    client.force_login(user)
    return client


def test_draft_edit_review_publish(version, owner, reviewer, member):
    draft = annotation.draft_create(version=version, by=member)
    assert draft.is_draft and draft.parent == version and draft.examples.count() == 120
    first = draft.examples.get(position=0)
    annotation.example_edit(example=first, fields={"text": "fixed text", "label": "neg"}, by=member)
    with pytest.raises(ServiceError) as refused:
        annotation.examples_set_status(
            examples=draft.examples.filter(position=1), status="approved", by=member
        )
    assert refused.value.status == 403
    annotation.examples_set_status(
        examples=draft.examples.filter(position__lt=5), status="approved", by=reviewer
    )
    annotation.examples_set_status(
        examples=draft.examples.filter(position=5), status="rejected", by=reviewer
    )
    published = annotation.draft_publish(draft=draft, by=reviewer, message="first pass")
    assert (published.number, published.parent_id, published.size) == (2, version.pk, 119)
    assert published.validation_report["annotation"]["approved"] == 5
    assert published.examples.get(position=0).fields == {"text": "fixed text", "label": "neg"}
    assert version.examples.get(position=0).fields != {"text": "fixed text", "label": "neg"}
    assert published.sha256 and published.sha256 != version.sha256


def test_published_versions_are_immutable(version, member):
    example = version.examples.first()
    with pytest.raises(ServiceError) as refused:
        annotation.example_edit(example=example, fields={"text": "x", "label": "pos"}, by=member)
    assert refused.value.status == 409
    assert version.examples.first().fields == example.fields


def test_edit_is_validated_like_an_upload(version, member):
    draft = annotation.draft_create(version=version, by=member)
    example = draft.examples.first()
    with pytest.raises(ServiceError) as refused:
        annotation.example_edit(example=example, fields={"text": "x", "label": "maybe"}, by=member)
    assert refused.value.errors[0].field == "label"


def test_flag_needs_a_reason_and_one_draft_at_a_time(version, member):
    draft = annotation.draft_create(version=version, by=member)
    with pytest.raises(ServiceError):
        annotation.examples_set_status(
            examples=draft.examples.all()[:1], status="flagged", by=member
        )
    qs = draft.examples.filter(position=3)
    annotation.examples_set_status(examples=qs, status="flagged", by=member, reason="ambiguous")
    assert qs.get().flag_reason == "ambiguous"
    with pytest.raises(ServiceError) as second:
        annotation.draft_create(version=version, by=member)
    assert second.value.status == 409


def test_admin_annotation_desk(version, staff, reviewer, member):
    annotation.draft_create(version=version, by=member)
    draft = DatasetVersion.objects.get(status="draft")
    client = admin_client(member)
    listing = client.get(
        "/admin/datasets/example/", {"version__id__exact": draft.pk, "label": "neg"}
    )
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 60
    example = draft.examples.get(position=2)
    page = client.get(f"/admin/datasets/example/{example.pk}/change/")
    assert page.status_code == 200 and "label" in page.context["adminform"].form.fields
    r = client.post(
        f"/admin/datasets/example/{example.pk}/change/",
        {"text": "edited in the admin", "label": "pos", "notes": "typo"},
    )
    assert r.status_code == 302, r.context["adminform"].form.errors if r.context else r
    example.refresh_from_db()
    assert example.fields == {"text": "edited in the admin", "label": "pos"}
    ids = list(draft.examples.filter(position__lt=3).values_list("pk", flat=True))
    action = {"action": "approve", "_selected_action": ids, "index": 0}
    client.post("/admin/datasets/example/", action)
    assert not Example.objects.filter(pk__in=ids, status="approved").exists()  # member: refused
    admin_client(reviewer).post("/admin/datasets/example/", action)
    assert Example.objects.filter(pk__in=ids, status="approved").count() == 3
    admin_client(reviewer).post(
        "/admin/datasets/example/",
        {"action": "assign", "_selected_action": ids, "index": 0, "annotator": member.pk},
    )
    assert Example.objects.filter(pk__in=ids, annotator=member).count() == 3
    admin_client(reviewer).post(
        "/admin/datasets/datasetversion/",
        {"action": "publish", "_selected_action": [draft.pk], "index": 0},
    )
    draft.refresh_from_db()
    assert draft.number == 2 and not draft.is_draft


def test_admin_hides_other_teams(version, staff, outsider):
    outsider.is_staff = True
    outsider.save()
    listing = admin_client(outsider).get("/admin/datasets/example/")
    assert listing.status_code == 200 and listing.context["cl"].result_count == 0


def test_annotate_button_starts_a_draft(browser_client, version):
    r = browser_client.post(f"/datasets/{version.dataset_id}/v/1/annotate/")
    draft = DatasetVersion.objects.get(status="draft")
    assert r.status_code == 302 and str(draft.pk) in r["Location"]
