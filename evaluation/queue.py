"""The evaluation queue, as workers and reapers see it: dispatch a token when an evaluation
is queued, claim it, execute it (idempotent: a retry fills in the samples that are missing),
queue it again when its worker died (as training runs are), send lost tokens again. Every
change of hands is a conditional UPDATE of one row. The user's commands (create, retry) are
in services.py."""

import math

import numpy as np
from django.apps import apps
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from datasets_app import formats
from evaluation import metrics, statistics
from evaluation.comparison_results import comparisons_score_ready
from evaluation.models import EvaluationRun, SampleResult
from evaluation.subjects import Subject
from experiments import workers
from experiments.models import Worker
from inference import generation

SPECIAL = {"loss"}  # computed from the model, reported with perplexity
CHUNK = 32


def _task():
    """The Huey task that carries an evaluation to a worker (evaluation.tasks.evaluate), as
    EvaluationConfig.ready keeps it: its body runs this module, so this module does not
    import it."""
    return apps.get_app_config("evaluation").evaluate


def dispatch_on_commit(evaluation: EvaluationRun) -> None:
    """A token for the evaluation once the enclosing transaction commits (a rolled-back
    request enqueues nothing)."""
    evaluate = _task()
    transaction.on_commit(lambda: evaluate(evaluation.pk))


def _claim(evaluation_id: int, worker: Worker) -> EvaluationRun | None:
    """Queued -> running for exactly one worker (a conditional UPDATE of one row)."""
    now = timezone.now()
    claimed = EvaluationRun.objects.filter(
        pk=evaluation_id, status=EvaluationRun.Status.QUEUED
    ).update(
        status=EvaluationRun.Status.RUNNING,
        worker=worker,
        attempt=F("attempt") + 1,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
    )
    return EvaluationRun.objects.get(pk=evaluation_id) if claimed else None


def _held(evaluation: EvaluationRun):
    """The evaluation, while this execution still holds it: once reaped or retried it is
    another attempt's, and this one must not write over it."""
    return EvaluationRun.objects.filter(
        pk=evaluation.pk, status=EvaluationRun.Status.RUNNING, attempt=evaluation.attempt
    )


class ClaimLost(Exception):
    """This execution was reaped while it was stopped (not dead after all)."""


def evaluation_execute(*, evaluation_id: int) -> EvaluationRun | None:
    evaluation = _claim(evaluation_id, workers.worker_heartbeat())
    if evaluation is None:
        return None
    try:
        _generate_missing(evaluation)
        _score(evaluation)
    except ClaimLost:
        return None
    except Exception as exc:
        _held(evaluation).update(
            status=EvaluationRun.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        raise
    # An earlier attempt's "worker died?" is no longer the news.
    _held(evaluation).update(
        status=EvaluationRun.Status.SUCCEEDED, error="", finished_at=timezone.now()
    )
    evaluation.refresh_from_db()
    comparisons_score_ready(evaluation=evaluation)
    return evaluation


def evaluations_abandoned(*, stale_after):
    """Running evaluations nothing was heard from within stale_after: neither their own
    heartbeat (one a chunk) nor their worker's (every few seconds while its process lives,
    so a slow chunk on a live worker is not taken for a dead one)."""
    cutoff = timezone.now() - stale_after
    return EvaluationRun.objects.filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at=None, started_at__lt=cutoff),
        status=EvaluationRun.Status.RUNNING,
    ).exclude(worker__heartbeat_at__gte=cutoff)


def evaluations_reap_stale(*, stale_after) -> list[int]:
    """Running evaluations whose worker died (SIGKILL, out of memory): queue them again to
    fill in the missing samples, or fail them after max_attempts."""
    return [e.pk for e in evaluations_abandoned(stale_after=stale_after) if _reap(e)]


@transaction.atomic
def _reap(evaluation: EvaluationRun) -> bool:
    heard = evaluation.heartbeat_at or evaluation.started_at
    reason = f"No heartbeat since {heard:%H:%M:%S} UTC (worker died?)"
    # The conditional update again: of two reapers (or a reaper and a retry), one acts.
    if evaluation.attempt >= evaluation.max_attempts:
        return bool(
            _held(evaluation).update(
                status=EvaluationRun.Status.FAILED,
                error=f"{reason}; gave up after {evaluation.attempt} attempts",
                finished_at=timezone.now(),
            )
        )
    if not _held(evaluation).update(status=EvaluationRun.Status.QUEUED, error=reason, worker=None):
        return False
    dispatch_on_commit(evaluation)
    return True


def evaluations_redispatch() -> list[int]:
    """The database is the queue's truth: a queued evaluation whose token is gone (Redis
    restarted without persistence, a dispatch failed during an outage) gets one again.
    Returns their ids."""
    evaluate = _task()
    pending = {
        task.args[0] if task.args else task.kwargs.get("evaluation_id")
        for task in evaluate.huey.pending()
        if isinstance(task, evaluate.task_class)
    }
    lost = list(
        EvaluationRun.objects.filter(status=EvaluationRun.Status.QUEUED)
        .exclude(pk__in=pending)
        .values_list("pk", flat=True)
    )
    for evaluation_id in lost:
        evaluate(evaluation_id)
    return lost


def _generate_missing(evaluation: EvaluationRun) -> None:
    """Answers the examples without a result, a chunk at a time; each chunk is stored and
    beats the heartbeat, so a retry (or another worker after a crash) starts where it ended."""
    done = set(evaluation.samples.values_list("example_id", flat=True))
    examples = evaluation.dataset_version.examples.filter(split=evaluation.split)
    todo = [e for e in examples.order_by("position") if e.pk not in done]
    if not todo:
        return
    subject = Subject.of(evaluation)
    model, tokenizer = generation.load(subject.base_model, subject.output_path())
    tokens = seconds = 0.0
    for start in range(0, len(todo), CHUNK):
        results, new_tokens, took = _answer(
            evaluation, model, tokenizer, todo[start : start + CHUNK]
        )
        SampleResult.objects.bulk_create(results, ignore_conflicts=True)
        tokens, seconds = tokens + new_tokens, seconds + took
        if not _held(evaluation).update(
            samples_done=evaluation.samples.count(),
            tokens_per_second=tokens / seconds if seconds else None,
            heartbeat_at=timezone.now(),
        ):
            raise ClaimLost


def _answer(evaluation: EvaluationRun, model, tokenizer, examples) -> tuple[list, int, float]:
    """The model's answers to examples (and the reference's loss when asked) as results."""
    settings = evaluation.generation
    fmt = evaluation.dataset_version.format
    pairs = [formats.prompt_text(fmt, e.fields, tokenizer) for e in examples]
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    answers, new_tokens, took = generation.generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=settings["max_new_tokens"],
        batch_size=settings["batch_size"],
        do_sample=settings["do_sample"],
        temperature=settings["temperature"],
        top_p=settings["top_p"],
        seed=settings["seed"],
    )
    losses = (
        generation.reference_losses(model, tokenizer, prompts, references, settings["batch_size"])
        if "loss" in evaluation.metrics
        else [None] * len(examples)
    )
    results = [
        SampleResult(
            evaluation=evaluation,
            example=e,
            position=e.position,
            prompt=p,
            reference=r,
            prediction=a,
            # (total negative log-likelihood, tokens): the corpus loss sums both.
            loss=loss[0] / max(loss[1], 1) if loss else None,
            stats={"loss": list(loss)} if loss else {},
        )
        for e, p, r, a, loss in zip(examples, prompts, references, answers, losses, strict=True)
    ]
    return results, new_tokens, took


def _score(evaluation: EvaluationRun) -> None:
    samples = list(evaluation.samples.order_by("position"))
    predictions = [s.prediction for s in samples]
    references = [s.reference for s in samples]
    results, signatures = {}, {}
    for name in evaluation.metrics:
        if name in SPECIAL:
            results.update(_loss_results(samples))
            continue
        output = metrics.load(name).compute(predictions=predictions, references=references)
        if "signature" in output:
            signatures[name] = output.pop("signature")
        for reported, value in output.items():
            if not isinstance(value, dict) or "per_sample" not in value:
                results[reported] = {"score": value}  # a hub metric without per-sample scores
                continue
            stats = np.array(value["stats"], dtype=float)
            low, high = statistics.bootstrap_ci(reported, stats)
            results[reported] = {
                "score": value["score"],
                "ci_low": low,
                "ci_high": high,
                "n": len(samples),
            }
            for sample, score, stat in zip(
                samples, value["per_sample"], value["stats"], strict=True
            ):
                sample.scores[reported] = score
                sample.stats[reported] = stat
    SampleResult.objects.bulk_update(samples, ["scores", "stats"], batch_size=500)
    EvaluationRun.objects.filter(pk=evaluation.pk).update(
        results=results, signatures=signatures, samples_done=len(samples)
    )


def _loss_results(samples: list[SampleResult]) -> dict:
    """Corpus loss = total negative log-likelihood / total reference tokens (so a 300-token
    answer weighs 100 times a 3-token one), perplexity = exp(loss); intervals resample
    samples. A sample stored before token counts were kept counts as one token."""
    scored = [s for s in samples if s.loss is not None]
    for s in scored:
        s.scores["loss"] = s.loss
        s.stats["loss"] = s.stats.get("loss") or [s.loss, 1]
    stats = np.array([s.stats["loss"] for s in scored], dtype=float)
    loss = statistics.score_from_stats("loss", stats)
    low, high = statistics.bootstrap_ci("loss", stats)
    return {
        "loss": {"score": loss, "ci_low": low, "ci_high": high, "n": len(scored)},
        "perplexity": {
            "score": math.exp(loss),
            "ci_low": math.exp(low),
            "ci_high": math.exp(high),
            "n": len(scored),
        },
    }
