import evaluate

from evaluation.metrics import match_scores, text_pair_info


class Accuracy(evaluate.Metric):
    """Classification accuracy: the generated label (stripped) against the reference label."""

    def _info(self):
        return text_pair_info("Accuracy of predicted labels")

    def _compute(self, predictions, references):
        return match_scores("accuracy", predictions, references)
