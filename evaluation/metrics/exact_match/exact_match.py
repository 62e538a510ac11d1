import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    """1 when the prediction equals the reference after stripping outer whitespace."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Exact match after stripping surrounding whitespace",
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        hits = [float(p.strip() == r.strip()) for p, r in zip(predictions, references, strict=True)]
        score = sum(hits) / len(hits) if hits else 0.0
        return {"exact_match": {"score": score, "per_sample": hits, "stats": [[h] for h in hits]}}
