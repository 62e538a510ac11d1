import evaluate
import numpy as np

from evaluation.metrics import macro_f1, text_pair_info


class F1(evaluate.Metric):
    """Macro-F1 of predicted labels. Per sample it reports correctness; the statistics are
    (predicted label id, reference label id), so a resample recomputes the real macro-F1."""

    def _info(self):
        return text_pair_info("Macro-averaged F1 over labels")

    def _compute(self, predictions, references):
        predictions = [p.strip() for p in predictions]
        references = [r.strip() for r in references]
        labels = {label: i for i, label in enumerate(sorted(set(predictions) | set(references)))}
        stats = [[labels[p], labels[r]] for p, r in zip(predictions, references, strict=True)]
        array = np.array(stats, dtype=float).reshape(-1, 2)
        return {
            "f1": {
                "score": macro_f1(array[:, 0], array[:, 1]) if stats else 0.0,
                "per_sample": [float(p == r) for p, r in stats],
                "stats": stats,
                "labels": list(labels),
            }
        }
