"""The shared body of the BLEU, chrF and TER evaluate modules: sacreBLEU computes the
per-sentence statistics once; the corpus score and the sentence scores both come from them."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF, TER

FEATURES = datasets.Features(
    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
)
CLASSES = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


def info(name: str, description: str) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description,
        citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores (sacreBLEU).",
        inputs_description="predictions: list of str; references: list of str (one each)",
        features=FEATURES,
        reference_urls=["https://github.com/mjpost/sacrebleu"],
    )


def compute(name: str, predictions: list[str], references: list[str]) -> dict:
    metric = CLASSES[name]()
    # Sentence BLEU uses effective order, as sacrebleu.sentence_bleu does.
    sentence = BLEU(effective_order=True) if name == "bleu" else metric
    stats = metric._extract_corpus_statistics(predictions, [references])
    corpus = metric._aggregate_and_compute(stats)
    return {
        name: {
            "score": float(corpus.score),
            "per_sample": [float(sentence._compute_score_from_stats(s).score) for s in stats],
            "stats": [list(map(float, s)) for s in stats],
        },
        "signature": str(metric.get_signature()),
    }
