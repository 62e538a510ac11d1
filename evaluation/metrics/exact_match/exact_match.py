import evaluate

from evaluation.metrics import match_scores, text_pair_info


class ExactMatch(evaluate.Metric):
    def _info(self):
        return text_pair_info("Exact match after stripping surrounding whitespace")

    def _compute(self, predictions, references):
        return match_scores("exact_match", predictions, references)
