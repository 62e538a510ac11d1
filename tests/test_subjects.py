"""The Subject type: one parser for the API's dict and one for the form's value, refusing
with the same field errors; resolution within a team; the query for a subject's evaluations."""

import pytest

from evaluation.models import EvaluationRun
from evaluation.subjects import Kind, Subject
from experiments.models import TrainingRun
from experiments.services import run_enqueue
from finetune_hub.errors import ServiceError
from finetune_hub.models import Team
from registry.models import ModelVersion
from registry.services import model_create
from tests.support.training_helpers import make_experiment


@pytest.mark.parametrize(
    "raw, value, subject",
    [
        ({"run": 12}, "run:12", Subject(Kind.RUN, run=12)),
        ({"model_version": 3}, "version:3", Subject(Kind.MODEL_VERSION, version=3)),
        (
            {"base_model": "embedded"},
            "base:embedded",
            Subject(Kind.BASE_MODEL, base_model="embedded"),
        ),
        # None is "not given", as a client sending every key would write it
        ({"run": 12, "model_version": None}, "run:12", Subject(Kind.RUN, run=12)),
    ],
)
def test_each_kind_is_parsed_from_the_api_and_the_form(raw, value, subject):
    assert Subject.from_api(raw) == Subject.from_form(value) == subject
    assert Subject.from_api(subject) is subject


def test_the_kinds_own_names_work_as_form_prefixes():
    assert Subject.from_form("model_version:3") == Subject(Kind.MODEL_VERSION, version=3)
    assert Subject.from_form("base_model:x/y") == Subject(Kind.BASE_MODEL, base_model="x/y")
    assert Subject.from_form("base:a:b") == Subject(Kind.BASE_MODEL, base_model="a:b")


def refused(parse, raw) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        parse(raw)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    "raw, value, field",
    [
        ({}, "", "subject"),
        ({"dataset": 1}, "dataset:1", "subject"),
        ({"run": 1, "base_model": "x"}, "runs:1", "subject"),
        ({"run": "abc"}, "run:abc", "subject.run"),
        ({"run": -1}, "run:-1", "subject.run"),
        ({"run": 2**63}, f"run:{2**63}", "subject.run"),
        ({"model_version": "3a"}, "version:3a", "subject.model_version"),
        ({"model_version": ""}, "version:", "subject.model_version"),
    ],
)
def test_bad_values_name_the_field_the_same_from_both_inputs(raw, value, field):
    from_api, from_form = refused(Subject.from_api, raw), refused(Subject.from_form, value)
    assert from_api.errors[0].field == from_form.errors[0].field == field
    assert from_api.detail == from_form.detail


@pytest.mark.parametrize(
    "raw, field",
    [
        ("run:1", "subject"),
        ([{"run": 1}], "subject"),
        ({"run": True}, "subject.run"),
        ({"run": 1.0}, "subject.run"),
        ({"model_version": 0}, "subject.model_version"),
        ({"base_model": 5}, "subject.base_model"),
        ({"base_model": ["x"]}, "subject.base_model"),
    ],
)
def test_bad_api_values_name_the_field(raw, field):
    assert refused(Subject.from_api, raw).errors[0].field == field


def finished_run(experiment, owner) -> TrainingRun:
    run = run_enqueue(experiment=experiment, by=owner, dispatch=False)
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", output_path=f"runs/{run.pk}")
    run.refresh_from_db()
    return run


def registered(model, run, owner, number=None) -> ModelVersion:
    """A version row for `run` (its weights are not needed here)."""
    return ModelVersion.objects.create(
        registered_model=model,
        number=number or model.versions.count() + 1,
        source_run=run,
        dataset_version=run.experiment.dataset_version,
        base_model=run.experiment.base_model,
        kind="adapter",
        artifact_path=run.output_path,
        created_by=owner,
    )


@pytest.fixture
def experiment(team, owner, tiny_model):
    return make_experiment(team, owner, tiny_model)


@pytest.fixture
def run(experiment, owner):
    return finished_run(experiment, owner)


@pytest.fixture
def version(team, owner, run):
    return registered(model_create(team=team, name="triage", by=owner), run, owner)


def test_for_team_resolves_the_model_it_builds_on(team, run, version, tiny_model):
    for subject in (Subject(Kind.RUN, run=run.pk), Subject(Kind.MODEL_VERSION, version=version.pk)):
        resolved = subject.for_team(team)
        assert resolved == Subject(subject.kind, subject.run, subject.version, tiny_model)
        assert resolved.output_path() == run.output_path
    base = Subject(Kind.BASE_MODEL, base_model=tiny_model)
    assert base.for_team(team) == base and base.output_path() is None


def test_another_teams_run_or_version_is_not_found(run, version):
    other = Team.objects.create(name="Other")
    for subject, field, missing in (
        (Subject(Kind.RUN, run=run.pk), "subject.run", Subject(Kind.RUN, run=run.pk + 100)),
        (
            Subject(Kind.MODEL_VERSION, version=version.pk),
            "subject.model_version",
            Subject(Kind.MODEL_VERSION, version=version.pk + 100),
        ),
    ):
        theirs, absent = refused(subject.for_team, other), refused(missing.for_team, other)
        # the same answer as for an id that does not exist: nothing is revealed
        assert theirs.errors[0].field == absent.errors[0].field == field
        assert theirs.detail == absent.detail and "this team" in theirs.detail


def test_a_run_without_output_is_a_conflict(team, experiment, owner):
    queued = run_enqueue(experiment=experiment, by=owner, dispatch=False)
    with pytest.raises(ServiceError) as caught:
        Subject(Kind.RUN, run=queued.pk).for_team(team)
    assert caught.value.status == 409


def test_an_unreadable_base_model_is_refused(team, tmp_path):
    with pytest.raises(ServiceError) as caught:
        Subject(Kind.BASE_MODEL, base_model=str(tmp_path / "nothing-here")).for_team(team)
    assert caught.value.errors[0].field in ("base_model", "subject.base_model")


def evaluation_of(subject: Subject, team, owner, dataset_version) -> EvaluationRun:
    return EvaluationRun.objects.create(
        team=team,
        dataset_version=dataset_version,
        metrics=["chrf"],
        generation={},
        created_by=owner,
        **subject.fields,
    )


def test_a_versions_evaluations_are_found_by_version_and_by_source_run_only(
    team, owner, experiment, run, version
):
    other_run = finished_run(experiment, owner)
    same_run_again = registered(version.registered_model, run, owner)
    other_version = registered(version.registered_model, other_run, owner)

    def evaluate(subject):
        return evaluation_of(subject, team, owner, experiment.dataset_version).pk

    by_version = evaluate(Subject.of_version(version))
    by_run = evaluate(Subject(Kind.RUN, run=run.pk))
    evaluate(Subject(Kind.RUN, run=other_run.pk))
    evaluate(Subject.of_version(same_run_again))  # another version, though of the same weights
    evaluate(Subject.of_version(other_version))
    evaluate(Subject(Kind.BASE_MODEL, base_model=str(version.pk)))

    def found(subject):
        return set(EvaluationRun.objects.filter(subject.evaluations()).values_list("pk", flat=True))

    assert found(Subject.of_version(version)) == {by_version, by_run}
    assert found(Subject(Kind.MODEL_VERSION, version=version.pk)) == {by_version, by_run}
    assert found(Subject(Kind.RUN, run=run.pk)) == {by_run}
    assert len(found(Subject(Kind.BASE_MODEL, base_model=str(version.pk)))) == 1


def test_an_evaluation_reads_back_as_its_subject_with_its_label(
    team, owner, experiment, run, version
):
    for subject, label in (
        (Subject(Kind.RUN, run=run.pk, base_model="b"), f"run #{run.pk}"),
        (
            Subject(Kind.MODEL_VERSION, version=version.pk, base_model="b"),
            f"model version {version.pk}",
        ),
        (Subject(Kind.BASE_MODEL, base_model="b"), "base model b"),
    ):
        evaluation = evaluation_of(subject, team, owner, experiment.dataset_version)
        evaluation.refresh_from_db()
        assert Subject.of(evaluation) == subject
        assert subject.label == evaluation.subject_label == label
