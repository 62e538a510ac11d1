"""A team with one of everything (a dataset and its versions, an experiment, trained, queued
and tracked runs with metrics, an evaluation, a human comparison with a vote, a registered
model with versions, an alias, a pending promotion, a served answer with feedback, a token),
each named with words found nowhere in the code or the templates: a page that shows another
team's data is caught by a word search of its body (tests/test_outsider_pages.py)."""

import re
from dataclasses import dataclass

from datasets_app.models import Dataset, DatasetVersion
from datasets_app.services import dataset_version_upload
from evaluation import comparisons
from evaluation.models import Comparison, EvaluationRun
from evaluation.queue import _score
from experiments import logged_models, metric_store, tracked
from experiments.models import Experiment, LoggedModel, TrainingRun
from experiments.services import experiment_create, run_enqueue
from finetune_hub.auth import token_create
from finetune_hub.models import ApiToken, Invitation, Membership, Role, Team
from registry import services as registry
from registry.models import ModelVersion, PromotionRequest, RegisteredModel
from tests.support.clients import make_user
from tests.support.comparisons import answered, scored
from tests.support.data import phrase
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import FAST, jsonl

# Every name team A gives: each word of each is found nowhere in the code or the templates.
TEAM = "Tangerine Ostrich"
OWNER = "quillbert"
DATASET, DESCRIPTION, FILENAME = "Marzipan Lighthouse", "Quetzal feathers", "albatross.jsonl"
VERSION_MESSAGE = "Narwhal refresh"
EXPERIMENT, EXPERIMENT_NOTES = "Pomegranate Sextant", "Chinchilla notes"
RUN_TAG, RUN_METRIC = ("gondola", "lagoon"), "gazpacho"
PROJECT, TRACKED_RUN, TRACKED_NOTES = "Ocelot Pavilion", "Wombat Semaphore", "Walrus notebook"
PARAM, TAG, TRACKED_METRIC = ("marimba", "0.5"), ("kestrel", "fjord"), "accordion"
COMPARISON, SUBJECTS, VOTE_COMMENT = "Bergamot Trebuchet", ("gorgonzola", "halibut"), "Persimmon"
PREDICTION = "chutney"
MODEL, MODEL_DESCRIPTION, VERSION_DESCRIPTION = "kumquat-sundial", "Periwinkle", "Flamingo"
ALIAS, ALIAS_REASON = "zeppelin", "Harpsichord launch"
GATED, REQUEST_REASON = "mandolin", "Calliope request"
PROMPT, FEEDBACK = "Capybara question", "Gherkin remark"
TOKEN = "Cormorant key"
LOGGED_MODEL = "Tapioca Orrery"  # an MLflow logged model of the tracked run
# Team A invites a user; another team invites team A's owner (the owner's own invitation).
INVITEE, INVITING_TEAM, INVITER = "tobogganer", "Rutabaga Carousel", "lamplighter"
# In the examples themselves (instructions and outputs), so samples and diffs carry them.
EXAMPLE_WORDS = ("xylograph", "tamarillo")
NAMES = [
    TEAM,
    OWNER,
    DATASET,
    DESCRIPTION,
    FILENAME.removesuffix(".jsonl"),
    VERSION_MESSAGE,
    EXPERIMENT,
    EXPERIMENT_NOTES,
    *RUN_TAG,
    RUN_METRIC,
    PROJECT,
    TRACKED_RUN,
    TRACKED_NOTES,
    *PARAM[:1],
    *TAG,
    TRACKED_METRIC,
    COMPARISON,
    *SUBJECTS,
    VOTE_COMMENT,
    PREDICTION,
    MODEL,
    MODEL_DESCRIPTION,
    VERSION_DESCRIPTION,
    ALIAS,
    ALIAS_REASON,
    GATED,
    REQUEST_REASON,
    PROMPT,
    FEEDBACK,
    TOKEN,
    LOGGED_MODEL,
    INVITEE,
    INVITING_TEAM,
    INVITER,
    *EXAMPLE_WORDS,
]
# The plain words of those names, which a page may use for its own purposes ("Notes").
COMMON = {"launch", "request", "remark", "question", "notes", "refresh"}
SECRETS = sorted({w.lower() for name in NAMES for w in re.findall(r"[A-Za-z]{4,}", name)} - COMMON)

# Stored, and shown on no page today (a vote's or a feedback's comment, a served prompt):
# still looked for in every answer to the outsider. (A version's description shows on its
# page and in MLflow's model-versions/get.)
STORED_ONLY = {"persimmon", "gherkin", "capybara"}


def _records(n: int, salt: str) -> list[dict]:
    return [
        {
            "instruction": f"Summarise the {EXAMPLE_WORDS[0]} {salt}: {phrase(i)}",
            "input": "",
            "output": f"{EXAMPLE_WORDS[1].title()} {i}: {phrase(i)[:12]}",
        }
        for i in range(n)
    ]


@dataclass
class World:
    team: Team
    owner: object
    dataset: Dataset
    version: DatasetVersion
    experiment: Experiment
    run: TrainingRun
    queued: TrainingRun
    tracked_run: TrainingRun
    evaluation: EvaluationRun
    comparison: Comparison
    model: RegisteredModel
    model_version: ModelVersion
    request: PromotionRequest
    token: ApiToken
    invitation: Invitation  # team A's, to another user
    my_invitation: Invitation  # another team's, to team A's owner
    logged_model: LoggedModel  # an MLflow logged model, output of the tracked run


def _data(team, owner, tiny_model):
    dataset = Dataset.objects.create(
        team=team, name=DATASET, description=DESCRIPTION, task="instruction", created_by=owner
    )
    dataset_version_upload(
        dataset=dataset, filename=FILENAME, data=jsonl(_records(60, "one")).encode(), by=owner
    )
    version = dataset_version_upload(
        dataset=dataset,
        filename=FILENAME,
        data=jsonl(_records(70, "two")).encode(),
        by=owner,
        message=VERSION_MESSAGE,
    )
    experiment = experiment_create(
        team=team,
        name=EXPERIMENT,
        dataset_version=version,
        base_model=tiny_model,
        technique="lora",
        hyperparameters=FAST,
        by=owner,
    )
    Experiment.objects.filter(pk=experiment.pk).update(notes=EXPERIMENT_NOTES)
    return dataset, version, experiment


def _runs(team, owner, tiny_model, experiment):
    runs = [trained_run(team, owner, tiny_model, seed, experiment=experiment) for seed in (1, 2)]
    metric_store.points_ingest([(runs[0].pk, step, RUN_METRIC, 1.0 / step) for step in (1, 2, 3)])
    tracked.tags_set(run=runs[0], tags=dict([RUN_TAG]), by=owner)
    queued = run_enqueue(experiment=experiment, by=owner, dispatch=False)
    project = tracked.project_for(team=team, name=PROJECT, by=owner)
    elsewhere = tracked.run_start(
        experiment=project, by=owner, name=TRACKED_RUN, params=dict([PARAM]), tags=dict([TAG])
    )
    tracked.points_log(
        run=elsewhere, points=[{"step": 1, "key": TRACKED_METRIC, "value": 0.5}], by=owner
    )
    tracked.notes_set(run=elsewhere, notes=TRACKED_NOTES, by=owner)
    model = logged_models.model_create(
        experiment=project, by=owner, name=LOGGED_MODEL, source_run_id=str(elsewhere.pk)
    )
    model = logged_models.artifact_put(
        model=model, path="MLmodel", chunks=iter([b"flavors: {}\n"]), by=owner
    )
    logged_models.outputs_log(run=elsewhere, outputs=[(model.pk, 1)], by=owner)
    return runs, queued, elsewhere, model


def _evaluations(team, owner, version, run):
    evaluation = answered(
        team, owner, version, "", lambda e: f"{PREDICTION} {e.position}", metrics=["chrf"]
    )
    EvaluationRun.objects.filter(pk=evaluation.pk).update(
        subject_kind="run", training_run=run, base_model=run.model_base
    )
    _score(evaluation)
    for label in SUBJECTS:
        scored(team, owner, version, label, lambda e: e.fields["output"])
    comparison = comparisons.comparison_create(
        team=team,
        subjects=[{"base_model": label} for label in SUBJECTS],
        dataset_version=version,
        mode="human",
        name=COMPARISON,
        by=owner,
    )
    vote = comparisons.next_pair(comparison=comparison, reviewer=owner)
    comparisons.vote_cast(
        comparison=comparison, vote_id=vote.pk, reviewer=owner, choice="left", comment=VOTE_COMMENT
    )
    return evaluation, comparison


def _registry(team, owner, runs):
    model = registry.model_create(
        team=team,
        name=MODEL,
        description=MODEL_DESCRIPTION,
        policy={"gated_aliases": [GATED], "require_approval": True},
        by=owner,
    )
    versions = [
        registry.version_register(model=model, run=run, by=owner, description=VERSION_DESCRIPTION)
        for run in runs
    ]
    registry.alias_promote(
        model=model, alias=ALIAS, version=versions[0], by=owner, reason=ALIAS_REASON
    )
    request = registry.alias_promote(
        model=model, alias=GATED, version=versions[1], by=owner, reason=REQUEST_REASON
    )
    served = registry.generate(
        model=model,
        alias=ALIAS,
        messages=[{"role": "user", "content": PROMPT}],
        max_new_tokens=2,
        by=owner,
    )
    registry.feedback_add(
        model=model, generation_id=served.pk, rating=1, by=owner, comment=FEEDBACK
    )
    return model, versions[0], request


def team_world(tiny_model) -> World:
    team = Team.objects.create(name=TEAM)
    owner = make_user(OWNER)
    Membership.objects.create(team=team, user=owner, role=Role.ADMIN)
    dataset, version, experiment = _data(team, owner, tiny_model)
    runs, queued, elsewhere, logged_model = _runs(team, owner, tiny_model, experiment)
    evaluation, comparison = _evaluations(team, owner, version, runs[0])
    model, model_version, request = _registry(team, owner, runs)
    token = token_create(user=owner, name=TOKEN)[0]
    invitation, my_invitation = _invitations(team, owner)
    return World(
        team, owner, dataset, version, experiment, runs[0], queued, elsewhere, evaluation,
        comparison, model, model_version, request, token, invitation, my_invitation,
        logged_model,
    )  # fmt: skip


def _invitations(team, owner):
    invitation = Invitation.objects.create(
        team=team, user=make_user(INVITEE), role=Role.REVIEWER, invited_by=owner
    )
    inviting = Team.objects.create(name=INVITING_TEAM)
    inviter = make_user(INVITER)
    Membership.objects.create(team=inviting, user=inviter, role=Role.ADMIN)
    mine = Invitation.objects.create(team=inviting, user=owner, invited_by=inviter)
    return invitation, mine


def object_ids(w: World) -> dict:
    """The value of each route parameter that names one of team A's objects."""
    return {
        "team_id": w.team.pk,
        "dataset_id": w.dataset.pk,
        "number": w.version.number,
        "experiment_id": w.experiment.pk,
        "run_id": w.run.pk,
        "evaluation_id": w.evaluation.pk,
        "comparison_id": w.comparison.pk,
        "name": w.model.name,
        "alias": ALIAS,
        "request_id": w.request.pk,
        "token_id": w.token.pk,
        "invitation_id": w.invitation.pk,
        "model_id": w.logged_model.pk,
    }
