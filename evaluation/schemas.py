"""What the evaluation and comparison API takes and answers (evaluation.api)."""

from datetime import datetime
from typing import Any

from ninja import Schema

from datasets_app.schemas import VersionRefOut
from finetune_hub.bounds import Id


class EvaluationIn(Schema):
    subject: dict
    dataset_version: Id | dict
    split: str = "eval"
    metrics: list[str] | None = None
    generation: dict | None = None


class ComparisonIn(Schema):
    subjects: list[dict]
    dataset_version: Id | dict
    split: str = "eval"
    mode: str = "auto"
    name: str = ""
    metrics: list[str] | None = None
    generation: dict | None = None
    min_votes: Id = 20


class VoteIn(Schema):
    pair: Id
    choice: str
    comment: str = ""


class ExportIn(Schema):
    dataset: Id | None = None


# A metric's corpus result by the name it reports: score, and for metrics with per-sample
# statistics ci_low, ci_high (the 95% interval) and n.
Results = dict[str, dict[str, Any]]


class SubjectOut(Schema):
    kind: str
    label: str
    run: int | None
    model_version: int | None
    base_model: str


class EvaluationOut(Schema):
    id: int
    team: int
    subject: SubjectOut
    dataset_version: VersionRefOut
    split: str
    metrics: list[str]
    generation: dict[str, Any]
    status: str
    attempt: int
    max_attempts: int
    heartbeat_at: datetime | None
    results: Results
    signatures: dict[str, Any]
    error: str
    samples_done: int
    samples_total: int
    tokens_per_second: float | None
    created_at: datetime
    finished_at: datetime | None


class SampleOut(Schema):
    position: int
    example: int
    prompt: str
    reference: str
    prediction: str
    loss: float | None
    scores: dict[str, Any]  # metric -> this sample's score


class SamplePage(Schema):
    count: int
    page: int
    pages: int
    results: list[SampleOut]


class ComparisonSubjectOut(Schema):
    index: int
    evaluation: int
    status: str


class ComparisonOut(Schema):
    id: int
    team: int
    name: str
    mode: str
    split: str
    dataset_version: VersionRefOut
    min_votes: int
    subjects: list[ComparisonSubjectOut]


class PairOut(Schema):
    """A blind pair: which subject gave which answer is not said."""

    pair: int
    prompt: str
    left: str
    right: str


class VoteOut(Schema):
    pair: int
    choice: str


class AutoSubjectOut(Schema):
    index: int
    evaluation: int
    label: str
    results: Results


class PairedTestOut(Schema):
    """Subject `subject` against the baseline (subject 0) on one metric."""

    metric: str
    baseline: int
    subject: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    subject_better: bool


class AutoResultsOut(Schema):
    subjects: list[AutoSubjectOut]
    samples: int
    tests: list[PairedTestOut]


class PairwiseOut(Schema):
    a: int
    b: int
    wins_a: int
    wins_b: int
    ties: int
    both_bad: int
    win_rate_a: float | None
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str


class RatingOut(Schema):
    subject: int
    score: float
    ci_low: float
    ci_high: float


class HumanResultsOut(Schema):
    votes: int
    pairwise: dict[str, PairwiseOut]  # by "a-b", the two subjects' indexes
    kappa: float | None
    ratings: list[RatingOut] | None  # Bradley-Terry, with three subjects or more


class ComparisonResultsOut(Schema):
    comparison: ComparisonOut
    automatic: AutoResultsOut | None  # once every evaluation has succeeded
    human: HumanResultsOut | None  # human mode only
