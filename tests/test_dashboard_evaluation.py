from django.test import Client

from evaluation import comparisons
from evaluation.models import Comparison, EvaluationRun, Vote
from finetune_hub.textdiff import word_diff
from tests.support.comparisons import good_and_bad, scored
from tests.support.training_helpers import make_version


def test_word_diff_marks_changed_words_and_escapes():
    a, b = word_diff("category=billing; priority=high <b>", "category=billing; priority=low <b>")
    assert a == "category=billing; <del>priority=high</del> &lt;b&gt;"
    assert b == "category=billing; <ins>priority=low</ins> &lt;b&gt;"


def test_evaluation_and_comparison_pages(browser_client, team, owner, tiny_model):
    version = make_version(team, owner, n=200)
    assert browser_client.get("/evaluations/").status_code == 200
    r = browser_client.post(
        "/evaluations/new/",
        {
            "subject": f"base:{tiny_model}",
            "dataset_version": version.pk,
            "metrics": ["bleu", "loss"],
        },
    )
    evaluation = EvaluationRun.objects.get()
    assert r["Location"] == f"/evaluations/{evaluation.pk}/" and evaluation.metrics == [
        "bleu",
        "loss",
    ]
    assert browser_client.get(r["Location"]).status_code == 200
    good = scored(team, owner, version, "good", lambda e: e.fields["output"])
    scored(team, owner, version, "bad", lambda e: "nope")
    r = browser_client.post(
        "/comparisons/new/",
        {
            "subjects": ["base:good", "base:bad"],
            "dataset_version": version.pk,
            "mode": "human",
            "min_votes": "3",
        },
    )
    comparison = Comparison.objects.get()
    page = browser_client.get(r["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "<del>" in html and "not significant" not in html
    # every test is significant and "bad" (subject 1) is worse than "good" on each metric
    assert ">worse<" in html and ">better<" not in html
    assert comparison.subjects.first().evaluation == good
    # The scored evaluation's page: each sample's prompt as its conversation, the generation
    # settings as fields (not a Python dict), and why corpus BLEU is not the samples' mean.
    html = browser_client.get(f"/evaluations/{good.pk}/").content.decode()
    first = good.samples.order_by("position").first()
    instruction = first.example.fields["instruction"]
    assert '<div class="turn user">' in html and instruction in html
    assert ">Generation</td>" in html and "{&#x27;" not in html
    assert 'id="bleu-note"' not in html  # no BLEU here
    from evaluation.queue import _score
    from tests.support.comparisons import answered

    with_bleu = answered(team, owner, version, "b", lambda e: e.fields["output"], metrics=["bleu"])
    _score(with_bleu)
    assert 'id="bleu-note"' in browser_client.get(f"/evaluations/{with_bleu.pk}/").content.decode()


def test_review_page_votes_blind_and_exports(browser_client, team, owner, reviewer):
    comparison = good_and_bad(team, owner, n=200)
    client = Client()
    client.force_login(reviewer)
    page = client.get(f"/comparisons/{comparison.pk}/review/")
    html = page.content.decode()
    assert page.status_code == 200 and "good" not in html and "Left is better" in html
    pair = page.context["view"]["pair"]
    client.post(f"/comparisons/{comparison.pk}/review/", {"pair": pair, "choice": "left"})
    assert Vote.objects.get(pk=pair).choice == "left"
    r = browser_client.post(f"/comparisons/{comparison.pk}/export/")
    assert r.status_code == 302 and "/datasets/" in r["Location"]


def test_evaluation_pages_refuse_outsiders(browser_client, team, owner, outsider):
    version = make_version(team, owner, n=200)
    evaluation = scored(team, owner, version, "good", lambda e: "x")
    scored(team, owner, version, "bad", lambda e: "y")
    comparison = comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": "good"}, {"base_model": "bad"}],
        dataset_version=version,
        mode="human",
        by=owner,
    )
    browser_client.force_login(outsider)
    for path in [
        f"/evaluations/{evaluation.pk}/",
        f"/comparisons/{comparison.pk}/",
        f"/comparisons/{comparison.pk}/review/",
    ]:
        assert browser_client.get(path).status_code == 404, path
    for path in [f"/evaluations/{evaluation.pk}/retry/", f"/comparisons/{comparison.pk}/export/"]:
        assert browser_client.post(path).status_code == 404, path
    assert "good" not in browser_client.get("/evaluations/").content.decode()


def test_evaluation_api_for_owner_and_outsider(api, outsider_api, team, owner, tiny_model):
    version = make_version(team, owner, n=200)
    r = api.post(
        "/api/evaluations",
        {"subject": {"base_model": tiny_model}, "dataset_version": version.pk, "metrics": ["chrf"]},
    )
    assert r.status_code == 201, r.content
    evaluation_id = r.json()["id"]
    assert api.get(f"/api/evaluations/{evaluation_id}").json()["status"] == "queued"
    assert api.get(f"/api/evaluations/{evaluation_id}/samples").json()["count"] == 0
    for path in [f"/api/evaluations/{evaluation_id}", f"/api/evaluations/{evaluation_id}/samples"]:
        assert outsider_api.get(path).status_code == 404
    assert outsider_api.post(f"/api/evaluations/{evaluation_id}/retry").status_code == 404
    r = outsider_api.post(
        "/api/evaluations", {"subject": {"base_model": tiny_model}, "dataset_version": version.pk}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "dataset_version"
    assert EvaluationRun.objects.count() == 1


def test_best_samples_come_first_for_lower_and_higher_is_better_metrics():
    from types import SimpleNamespace

    from evaluation import selectors

    samples = [
        SimpleNamespace(position=i, scores=scores)
        for i, scores in enumerate(
            [
                {"ter": 30.0, "bleu": 40.0},
                {"ter": 10.0, "bleu": 90.0},
                {"ter": float("nan"), "bleu": 5.0},
                {"bleu": 60.0},
                {"ter": 50.0, "bleu": float("nan")},
            ]
        )
    ]
    evaluation = SimpleNamespace(
        samples=SimpleNamespace(select_related=lambda *related: samples),
        results={"ter": {}, "bleu": {}, "perplexity": {}},
    )
    links = {link["metric"]: link for link in selectors.sort_links(evaluation)}
    assert set(links) == {"ter", "bleu"}
    assert links["ter"]["best"] == "ter" and links["bleu"]["best"] == "-bleu"

    def positions(order):
        return [s.position for s in selectors.samples_page(evaluation=evaluation, order=order)]

    assert positions(links["ter"]["best"]) == [1, 0, 4, 2, 3]  # lowest TER first, unscored last
    assert positions(links["ter"]["worst"]) == [4, 0, 1, 2, 3]
    assert positions(links["bleu"]["best"]) == [1, 3, 0, 2, 4]


def test_a_versions_evaluation_shows_its_lineage_and_base_model_as_fields(
    browser_client, team, owner, tiny_model
):
    """The evaluation page and the registry version page say what was evaluated as fields:
    the version, the run it came from, its experiment and training data, and what was
    recorded of the base model (hashes shortened, no server path, no Python dict)."""
    from evaluation import services as evaluation_services
    from experiments.models import TrainingRun
    from registry import services as registry
    from tests.support.registry_helpers import trained_run

    run = trained_run(team, owner, tiny_model, seed=1)
    info = {
        "ref": tiny_model,
        "path": "/srv/secret/models/tiny",
        "source": "tiny random llama (tests)",
        "files_sha256": {"config.json": "ab" * 32, "model.safetensors": "cd" * 32},
        "dtype": "float32",
        "device": "cpu",
    }
    TrainingRun.objects.filter(pk=run.pk).update(base_model_info=info)
    run.refresh_from_db()
    model = registry.model_create(team=team, name="lineage", by=owner)
    version = registry.version_register(model=model, run=run, by=owner)
    evaluation = evaluation_services.evaluation_create(
        team=team,
        subject={"model_version": version.pk},
        dataset_version=run.experiment.dataset_version,
        metric_names=["exact_match"],
        by=owner,
    )
    data = run.experiment.dataset_version
    expected = [
        ("Kind", "Model Version"),
        ("Model version", "lineage v1 (adapter)"),
        ("From run", f"#{run.pk}  (6 steps)"),
        ("Experiment", f"{run.experiment.name} (LoRA)"),
        ("Trained on", f"{data.dataset.name} v{data.number}"),
        ("Base model", tiny_model),
        ("Source", "tiny random llama (tests)"),
        ("Weight files SHA-256", f"config.json {'ab' * 8}…\nmodel.safetensors {'cd' * 8}…"),
        ("Loaded as", "float32"),
        ("Device", "cpu"),
        (
            "Generation",
            "max_new_tokens 64, batch_size 8, do_sample False, temperature 1.0, top_p 1.0, seed 0",
        ),
        ("Metrics", "exact_match"),
    ]
    html = browser_client.get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert table_rows(html, "subject") == expected
    assert "/srv/secret" not in html and "{&#x27;" not in html
    html = browser_client.get("/registry/lineage/v/1/").content.decode()
    rows = table_rows(html, "lineage")
    assert rows[2:7] == expected[5:10] and "/srv/secret" not in html


def table_rows(html: str, table_id: str) -> list[tuple[str, ...]]:
    """The text of each row of the table with this id, cell by cell, tags dropped."""
    import re
    from html import unescape

    table = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [
        tuple(
            re.sub(r"\s*\n\s*(?=\S)", "\n", unescape(re.sub(r"<[^>]+>", "", c))).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        )
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ]
