import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
application = get_wsgi_application()

# The web's threads serve and score models too (inference/warmup.py says why).
from inference.warmup import import_model_stack  # noqa: E402

import_model_stack()
