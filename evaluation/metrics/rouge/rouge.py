import evaluate
from rouge_score import rouge_scorer, scoring

from evaluation.metrics import text_pair_info

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


class Rouge(evaluate.Metric):
    """ROUGE-1/2/L/Lsum F-measure from rouge-score, averaged over samples (as the hub's
    rouge module reports with use_aggregator=False, then a mean)."""

    def _info(self):
        return text_pair_info(
            "ROUGE F-measures (rouge-score), per sample and their mean",
            "Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=use_stemmer)
        per_type = {t: [] for t in TYPES}
        for reference, prediction in zip(references, predictions, strict=True):
            scores: dict[str, scoring.Score] = scorer.score(reference, prediction)
            for t in TYPES:
                per_type[t].append(float(scores[t].fmeasure))
        return {
            t: {
                "score": sum(v) / len(v) if v else 0.0,
                "per_sample": v,
                "stats": [[x] for x in v],
            }
            for t, v in per_type.items()
        }
