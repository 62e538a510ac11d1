import evaluate

from evaluation.metrics.sacrebleu_module import compute, info


class Bleu(evaluate.Metric):
    def _info(self):
        return info("Corpus BLEU (sacreBLEU) with sentence BLEU per sample")

    def _compute(self, predictions, references):
        return compute("bleu", predictions, references)
