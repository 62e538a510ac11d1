"""Cross-tenant disclosure through the Django admin: a staff member of one team (annotators
get is_staff for the annotation desk) must not read another team's names in the desk's
lists, filter sidebars, choice lists or forms, nor assign work to a stranger."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from datasets_app import annotation, services
from datasets_app.models import Dataset, Example
from finetune_hub.models import Membership, Role, Team
from tests.support.clients import make_user
from tests.support.data import examples, jsonl

SECRETS = ["bravo-hidden-team", "bravo-hidden-dataset", "bravohiddenlabel", "bravo_hidden_user"]


def _draft(team, user, name, labels):
    dataset = Dataset.objects.create(
        team=team, name=name, task="classification", labels=labels, created_by=user
    )
    version = services.dataset_version_upload(
        dataset=dataset,
        filename="d.jsonl",
        data=jsonl(examples("classification", 12)).encode(),
        by=user,
    )
    return annotation.draft_create(version=version, by=user)


@pytest.fixture
def desk(team, owner, member):
    """Team A (Acme): the staff owner, a member, a draft. Team B: every name distinctive."""
    owner.is_staff = True
    owner.save()
    # Django permissions make the dataset form editable, so its team choice list renders.
    owner.user_permissions.add(*Permission.objects.filter(content_type__app_label="experiments"))
    a_draft = _draft(team, owner, "acme-data", ["pos", "neg"])
    annotation.examples_assign(
        examples=a_draft.examples.filter(position__lt=3), annotator=member, by=owner
    )
    b_team = Team.objects.create(name="Bravo-Hidden-Team")
    b_user = make_user("bravo_hidden_user")
    Membership.objects.create(team=b_team, user=b_user, role=Role.ADMIN)
    b_draft = _draft(b_team, b_user, "bravo-hidden-dataset", ["pos", "neg", "bravohiddenlabel"])
    annotation.examples_assign(examples=b_draft.examples.all(), annotator=b_user, by=b_user)
    client = Client()
    client.force_login(owner)
    return {"client": client, "a": a_draft, "b": b_draft, "b_user": b_user, "member": member}


def _html(client, url) -> str:
    r = client.get(url, follow=True)
    assert r.status_code in (200, 403), (url, r.status_code)
    return r.content.decode().lower()


def test_desk_pages_show_no_name_of_another_team(desk):
    a, b = desk["a"], desk["b"]
    example = a.examples.first()
    pages = {
        "/admin/": None,
        "/admin/datasets/dataset/": "acme-data",
        f"/admin/datasets/dataset/{a.dataset_id}/change/": "acme",
        "/admin/datasets/datasetversion/": "acme-data",
        f"/admin/datasets/datasetversion/{a.pk}/change/": "acme-data",
        "/admin/datasets/example/": "member",  # the annotator filter and choice list
        f"/admin/datasets/example/?version__id__exact={a.pk}": "member",
        f"/admin/datasets/example/{example.pk}/change/": "acme-data",
        # another team's rows, named by id, are not there either
        f"/admin/datasets/dataset/{b.dataset_id}/change/": None,
        f"/admin/datasets/example/?version__id__exact={b.pk}": None,
        f"/admin/datasets/example/?annotator__id__exact={desk['b_user'].pk}": None,
        f"/admin/datasets/example/{b.examples.first().pk}/change/": None,
        "/admin/finetune_hub/team/": None,
        "/admin/finetune_hub/apitoken/": None,
    }
    for url, expected in pages.items():
        html = _html(desk["client"], url)
        leaked = [s for s in SECRETS if s in html]
        assert not leaked, (url, leaked)
        if expected:
            assert expected in html, (url, expected)  # the page does show team A's data


def test_label_filter_lists_only_my_teams_labels(desk):
    html = _html(desk["client"], "/admin/datasets/example/")
    assert "?label=pos" in html and "bravohiddenlabel" not in html


def test_site_screens_are_for_superusers(desk, owner):
    for url in ["/admin/finetune_hub/team/", "/admin/finetune_hub/apitoken/"]:
        assert desk["client"].get(url).status_code == 403
    owner.is_superuser = True
    owner.save()
    assert "bravo-hidden-team" in _html(desk["client"], "/admin/finetune_hub/team/")
    # a superuser (site admin) sees every team's desk
    assert "bravo-hidden-dataset" in _html(desk["client"], "/admin/datasets/dataset/")


def test_assigning_to_a_user_of_another_team_is_refused(desk):
    a = desk["a"]
    ids = list(a.examples.values_list("pk", flat=True)[:2])
    r = desk["client"].post(
        "/admin/datasets/example/",
        {"action": "assign", "annotator": desk["b_user"].pk, "_selected_action": ids},
        follow=True,
    )
    assert "choose an annotator of your team" in r.content.decode().lower()
    assert not Example.objects.filter(pk__in=ids, annotator=desk["b_user"]).exists()
    r = desk["client"].post(
        "/admin/datasets/example/",
        {"action": "assign", "annotator": desk["member"].pk, "_selected_action": ids},
    )
    assert Example.objects.filter(pk__in=ids, annotator=desk["member"]).count() == 2
