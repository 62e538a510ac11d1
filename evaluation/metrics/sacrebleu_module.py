"""The shared body of the BLEU, chrF and TER evaluate modules: sacreBLEU computes the
per-sentence statistics once; the corpus score and the sentence scores both come from them."""

from sacrebleu.metrics import BLEU, CHRF, TER

from evaluation.metrics import text_pair_info

CLASSES = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


def info(description: str):
    return text_pair_info(
        description, "Post, 2018. A Call for Clarity in Reporting BLEU Scores (sacreBLEU)."
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
