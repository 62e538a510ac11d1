"""transformers 5 resolves its names lazily, and two threads resolving one at the same moment
can fail ("cannot import name 'AutoModelForCausalLM' from 'transformers'", seen with a
training supervisor and an evaluation starting together in one worker). A process that runs
model code in several threads resolves them once in its main thread, before any starts."""


def import_model_stack() -> None:
    import peft  # noqa: F401
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
