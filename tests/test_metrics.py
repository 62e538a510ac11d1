"""Each metric module against its reference library, to 1e-9."""

import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from evaluation import metrics

WORDS = "the a cat dog sat on mat ran fast slow red blue house tree river".split()


def corpus(n=60, seed=0):
    rng = random.Random(seed)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    preds = [
        " ".join(w if rng.random() < 0.7 else rng.choice(WORDS) for w in r.split()) for r in refs
    ]
    preds[0] = refs[0]  # one exact match
    return preds, refs


def compute(name, preds, refs):
    return metrics.load(name).compute(predictions=preds, references=refs)


@pytest.mark.parametrize(
    "name, corpus_fn, sentence_fn",
    [
        ("bleu", sacrebleu.corpus_bleu, sacrebleu.sentence_bleu),
        ("chrf", sacrebleu.corpus_chrf, sacrebleu.sentence_chrf),
        ("ter", sacrebleu.corpus_ter, sacrebleu.sentence_ter),
    ],
)
def test_sacrebleu_metrics_equal_the_library(name, corpus_fn, sentence_fn):
    preds, refs = corpus()
    out = compute(name, preds, refs)
    assert abs(out[name]["score"] - corpus_fn(preds, [refs]).score) < 1e-9
    for p, r, s in zip(preds, refs, out[name]["per_sample"], strict=True):
        assert abs(s - sentence_fn(p, [r]).score) < 1e-9
    assert out["signature"].startswith("nrefs:1|")
    stats = np.array(out[name]["stats"])
    assert abs(metrics.score_from_stats(name, stats) - out[name]["score"]) < 1e-9


def test_rouge_equals_rouge_score():
    preds, refs = corpus()
    out = compute("rouge", preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    expected = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        per = [e[kind].fmeasure for e in expected]
        assert np.allclose(out[kind]["per_sample"], per, rtol=0, atol=1e-9)
        assert abs(out[kind]["score"] - sum(per) / len(per)) < 1e-9


def test_exact_match_accuracy_and_macro_f1():
    preds = ["pos", "neg ", "pos", "neu", "neg"]
    refs = ["pos", "neg", "neg", "neu", "pos"]
    assert compute("exact_match", preds, refs)["exact_match"]["score"] == 0.6
    assert compute("accuracy", preds, refs)["accuracy"]["score"] == 0.6
    f1 = compute("f1", preds, refs)["f1"]
    # per label: neg P=1/2 R=1/2 -> .5; neu 1; pos P=1/2 R=1/2 -> .5
    assert abs(f1["score"] - (0.5 + 1 + 0.5) / 3) < 1e-12
    stats = np.array(f1["stats"], dtype=float)
    assert abs(metrics.score_from_stats("f1", stats) - f1["score"]) < 1e-12


def test_macro_f1_per_label_cases_by_hand():
    """a: 2 right (F1 1); b: 1 right, 1 wrongly predicted (2/3); c: 1 right, 1 missed (2/3);
    d only predicted and e only expected, never right (0 each): (1 + 2/3 + 2/3) / 5."""
    preds = np.array(["a", "a", "b", "b", "c", "d"])
    refs = np.array(["a", "a", "b", "c", "c", "e"])
    assert metrics.macro_f1(preds, refs) == pytest.approx(7 / 15, abs=1e-12)


def test_match_scores_of_no_samples_is_zero():
    assert metrics.match_scores("exact_match", [], []) == {
        "exact_match": {"score": 0.0, "per_sample": [], "stats": []}
    }


def test_corpus_loss_is_total_nll_over_total_tokens():
    """Rows are (summed negative log-likelihood, tokens): a 3-token answer weighs three
    times a 1-token one, and no tokens at all give 0, not a division by zero."""
    stats = np.array([[6.0, 3], [2.0, 1], [0.0, 0]])
    assert metrics.score_from_stats("loss", stats) == pytest.approx(8 / 4)
    assert metrics.score_from_stats("loss", np.array([[3.0, 1]])) == pytest.approx(3.0)
    assert metrics.score_from_stats("loss", np.array([[0.0, 0]])) == 0.0
