import evaluate

from evaluation.metrics.sacrebleu_module import compute, info


class Chrf(evaluate.Metric):
    def _info(self):
        return info("chrF (sacreBLEU) with sentence chrF per sample")

    def _compute(self, predictions, references):
        return compute("chrf", predictions, references)
