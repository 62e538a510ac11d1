"""The training process: `python -m experiments.training.child RUN_ID`. Started and
watched by the supervisor; a crash here cannot take the worker down, and its exit returns
all GPU memory."""

import logging
import os
import sys
import traceback
from pathlib import Path

EXIT_REFUSED = 3  # a ServiceError: the run cannot be trained here (its message is stored)


def main(run_id: int, log_path: Path) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from experiments.models import TrainingRun
    from experiments.training import engine
    from finetune_hub.errors import ServiceError

    run = TrainingRun.objects.select_related("experiment__dataset_version").get(pk=run_id)
    try:
        engine.train(run, log_path)
    except ServiceError as exc:
        TrainingRun.objects.filter(pk=run_id).update(error=exc.detail)
        print(exc.detail, file=sys.stderr)
        return EXIT_REFUSED
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), Path(sys.argv[2])))
