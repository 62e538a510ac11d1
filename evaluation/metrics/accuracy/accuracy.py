import datasets
import evaluate


class Accuracy(evaluate.Metric):
    """Classification accuracy: the predicted label (the generated text, stripped) against
    the reference label."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy of predicted labels",
            citation="",
            inputs_description="predictions: list of str labels; references: list of str labels",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        hits = [float(p.strip() == r.strip()) for p, r in zip(predictions, references, strict=True)]
        score = sum(hits) / len(hits) if hits else 0.0
        return {"accuracy": {"score": score, "per_sample": hits, "stats": [[h] for h in hits]}}
