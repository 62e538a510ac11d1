import evaluate

from evaluation.metrics.sacrebleu_module import compute, info


class Ter(evaluate.Metric):
    def _info(self):
        return info("TER (sacreBLEU), lower is better, with sentence TER per sample")

    def _compute(self, predictions, references):
        return compute("ter", predictions, references)
