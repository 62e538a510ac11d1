"""BLEU + chrF + ROUGE over 10,000 pairs: the project's path (local evaluate modules, which
also return per-sample scores and statistics) against calling sacrebleu and rouge-score
directly for the same corpus scores; then the project's bootstrap intervals on top.

    python bench/metrics.py --pairs 10000
"""

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "the order arrived late and the box was damaged so please send a refund for "
    "my account billing invoice shipping address tracking number item"
).split()


def corpus(n: int):
    rng = random.Random(0)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) for _ in range(n)]
    preds = [
        " ".join(w if rng.random() < 0.75 else rng.choice(WORDS) for w in r.split()) for r in refs
    ]
    return preds, refs


def direct(preds, refs) -> dict:
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    rouge = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    return {
        "bleu": sacrebleu.corpus_bleu(preds, [refs]).score,
        "chrf": sacrebleu.corpus_chrf(preds, [refs]).score,
        "rouge1": sum(s["rouge1"].fmeasure for s in rouge) / len(rouge),
    }


def project(preds, refs) -> dict:
    from evaluation import metrics

    out = {}
    for name in ("bleu", "chrf", "rouge"):
        out.update(metrics.load(name).compute(predictions=preds, references=refs))
    return {k: out[k]["score"] for k in ("bleu", "chrf", "rouge1")}


def timed(fn, *args, repeats: int = 3):
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy as np

    from evaluation import metrics, statistics

    preds, refs = corpus(args.pairs)
    for name in ("bleu", "chrf", "rouge"):
        metrics.load(name)  # module loading is a one-off per process, not per evaluation
    direct_s, expected = timed(direct, preds, refs, repeats=args.repeats)
    project_s, got = timed(project, preds, refs, repeats=args.repeats)
    assert all(abs(expected[k] - got[k]) < 1e-9 for k in expected), (expected, got)
    bleu = metrics.load("bleu").compute(predictions=preds, references=refs)["bleu"]
    started = time.perf_counter()
    statistics.bootstrap_ci("bleu", np.array(bleu["stats"]))
    bootstrap_s = time.perf_counter() - started
    print(
        f"\n{' '.join(sys.argv)}  on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    print(f"| path | pairs | seconds (best of {args.repeats}) |")
    print("| --- | --- | --- |")
    print(f"| sacrebleu corpus BLEU + chrF, rouge-score per pair | {args.pairs} | {direct_s:.2f} |")
    print(f"| project: evaluate modules with per-sample scores | {args.pairs} | {project_s:.2f} |")
    print(
        f"| project: 1000-resample bootstrap interval of BLEU | {args.pairs} | {bootstrap_s:.2f} |"
    )
    print(
        f"\noverhead of the project's path: {100 * (project_s / direct_s - 1):+.1f}% "
        "(same corpus scores to 1e-9)"
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
    import django

    django.setup()
    main()
