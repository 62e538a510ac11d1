"""Settings come from the environment so one code base runs embedded (SQLite + SqliteHuey,
nothing to start) and scaled out (PostgreSQL, Redis, several workers sharing ARTIFACT_ROOT)."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

from finetune_hub import capacity

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FINETUNE_HUB_VAR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = os.environ.get("FINETUNE_HUB_ENV", "development") == "production"
DEBUG = not PRODUCTION and os.environ.get("DEBUG", "1") == "1"


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    if PRODUCTION:
        raise RuntimeError("SECRET_KEY must be set when FINETUNE_HUB_ENV=production")
    # A development key kept under var/ so sessions survive restarts; never committed.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    # Django's admin with a site that team roles open (finetune_hub/admin_site.py).
    "finetune_hub.apps.HubAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",  # the API docs page served from its own static files, not a CDN
    "finetune_hub",
    # Failed logins counted per username and per address, on the site's and the admin's
    # login forms alike (finetune_hub/throttle.py).
    "axes",
    "datasets_app",
    "inference",
    "experiments",
    "evaluation",
    "registry",
    # Last: its run_huey is wrapped by experiments' (the earlier app's command wins).
    "huey.contrib.djhuey",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "finetune_hub.middleware.DatabaseConnectionMiddleware",
    # Before anything reads a body (the CSRF check reads a form): a body declared larger
    # than its route takes is refused unread (finetune_hub/uploads.py).
    "finetune_hub.uploads.BodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "finetune_hub.middleware.LoginRequiredMiddleware",
    "finetune_hub.middleware.ServiceErrorPageMiddleware",
    # After authentication (it keys on the caller) and CSRF (a form's key is read from a
    # checked POST).
    "finetune_hub.idempotency.IdempotencyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "finetune_hub.urls"
WSGI_APPLICATION = "finetune_hub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # {% idempotency_key %} in every form that creates (finetune_hub/idempotency.py).
            "builtins": ["finetune_hub.idempotency"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# SQLite: WAL lets the web process read while a worker writes; the busy timeout and
# IMMEDIATE transactions make writers queue instead of failing with "database is locked".
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;"
    ),
}
# PostgreSQL connections are a budget (finetune_hub/capacity.py): each process draws from
# Django's psycopg pool (DB_POOLING=django) or holds one connection a thread to pgbouncer
# (DB_POOLING=pgbouncer); the check in finetune_hub/checks.py refuses a configuration whose
# processes could together open more than DB_MAX_CONNECTIONS.
WEB_WORKERS = capacity.web_workers()
WEB_THREADS = capacity.web_threads()
HUEY_PROCESSES = capacity.env_int("HUEY_PROCESSES", 1)
# Threads of one `run_huey`: how many runs (and evaluations) it supervises at once. On a GPU
# host, its number of GPUs: each run holds the GPUs it asked for, and a run waits while too
# few are free.
HUEY_WORKERS = capacity.env_int("HUEY_WORKERS", 1)
DB_MAX_CONNECTIONS = capacity.env_int("DB_MAX_CONNECTIONS", capacity.DEFAULT_DB_MAX_CONNECTIONS)
DB_POOLING = os.environ.get("DB_POOLING", "django")
if DB_POOLING not in ("django", "pgbouncer"):
    raise RuntimeError("DB_POOLING must be 'django' or 'pgbouncer'")
DB_POOL = {
    "min_size": capacity.env_int("DB_POOL_MIN_SIZE", 1),
    "max_size": capacity.env_int("DB_POOL_MAX_SIZE", WEB_THREADS),
    # A request waits this long for a free connection, then answers 503 (middleware.py).
    "timeout": float(os.environ.get("DB_POOL_TIMEOUT") or 10),
}
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        if DB_POOLING == "django":
            # The pool hands connections out and takes them back; persistent ones would
            # bypass it. Health checks: no dead connection after a database restart.
            DATABASES["default"]["OPTIONS"] = {"pool": DB_POOL}
            DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        else:
            # pgbouncer in transaction mode: no server-side cursors across transactions.
            DATABASES["default"]["CONN_MAX_AGE"] = capacity.env_int("DB_CONN_MAX_AGE", 0)
            DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
            "TEST": {"NAME": VAR_DIR / "test-db.sqlite3"},
        }
    }
# The training process is told which database its supervisor uses (tests use a test database).
if os.environ.get("FINETUNE_HUB_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["FINETUNE_HUB_DB_NAME"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("REDIS_URL"):
    HUEY = {
        "huey_class": "huey.RedisHuey",
        "name": os.environ.get("HUEY_NAME", "finetune_hub"),
        "url": os.environ["REDIS_URL"],
        "immediate": False,
        "consumer": {"workers": HUEY_WORKERS, "worker_type": "thread"},
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": "finetune_hub",
        "filename": str(VAR_DIR / "huey.sqlite3"),
        "immediate": False,
        "consumer": {"workers": HUEY_WORKERS, "worker_type": "thread"},
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): LOGIN_FAILURE_LIMIT failed attempts for one username, or
# from one address, lock that username or address out of every login form (the site's and
# the admin's) for LOGIN_COOLOFF_MINUTES, counted again from each attempt made while locked.
# A username that does not exist is counted like one that does, so the answer tells nothing.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = capacity.env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=capacity.env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "finetune_hub.throttle.lockout_response"
AXES_CLIENT_IP_CALLABLE = "finetune_hub.throttle.client_address"
# Proxies in front that append to X-Forwarded-For (the TLS proxy of Production): the client's
# address is that many entries from the right. 0: REMOTE_ADDR, the direct peer.
FORWARDED_PROXY_COUNT = capacity.env_int("FORWARDED_PROXY_COUNT", 1 if PRODUCTION else 0)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
# plotly.js is vendored (finetune_hub/static/vendor/README.md): the dashboard works offline.
STATICFILES_DIRS = [BASE_DIR / "finetune_hub" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Vendored files carry their version in their name: cached for good by the browser
# (Cache-Control: max-age=315360000, immutable). The project's own small files are
# revalidated after WHITENOISE_MAX_AGE (60 s).
WHITENOISE_IMMUTABLE_FILE_TEST = r"/vendor/[^/]+-\d+\.\d+\.\d+\.min\.js$"

# Every artifact (dataset files, checkpoints, adapters, exports) lives under this root;
# finetune_hub.storage refuses any path that resolves outside it.
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", VAR_DIR / "artifacts")).resolve()
# One output file of a tracked run (experiments/tracked.py), streamed to disk as it arrives.
ARTIFACT_MAX_UPLOAD_BYTES = int(os.environ.get("ARTIFACT_MAX_UPLOAD_BYTES", 20 * 1024**3))
DATASET_MAX_UPLOAD_BYTES = int(os.environ.get("DATASET_MAX_UPLOAD_BYTES", 50 * 1024 * 1024))
# Uploaded files stay in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then go to a temporary file;
# the capped handler stops any upload past DATASET_MAX_UPLOAD_BYTES while it streams in.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "finetune_hub.uploads.CappedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Form fields and JSON bodies (everything but files), checked against Content-Length first.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# The temporary files of uploads go to a folder of our own, not the system's: a web process
# killed mid-body leaves its file where finetune_hub/sweep.py finds it.
FILE_UPLOAD_TEMP_DIR = VAR_DIR / "uploads"
FILE_UPLOAD_TEMP_DIR.mkdir(exist_ok=True)
# Upload files and interrupted artifact writes untouched for this long belong to a killed
# process (a live upload writes to its file as the bytes arrive): the worker removes them.
LEFTOVER_MAX_AGE_S = int(os.environ.get("LEFTOVER_MAX_AGE_S", 3600))

# Where the embedded SmolLM2 is converted to safetensors once (see experiments.models_hub).
MODEL_CACHE_DIR = Path(os.environ.get("MODEL_CACHE_DIR", VAR_DIR / "models")).resolve()

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = os.environ.get("SECURE_SSL_REDIRECT", "1") == "1"
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "worker": {"format": "[%(asctime)s] %(levelname)s:%(name)s:%(threadName)s:%(message)s"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "worker": {"class": "logging.StreamHandler", "formatter": "worker"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # The worker's own logger, configured here: run_huey then adds no handler of its own,
    # which with the root's printed every worker line twice.
    "loggers": {
        "huey": {
            "handlers": ["worker"],
            "level": os.environ.get("LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}

# Extra folders holding base models that users may name by path (colon-separated).
BASE_MODEL_DIRS = [Path(p).resolve() for p in os.environ.get("BASE_MODEL_DIRS", "").split(":") if p]
# The tokenizer uploads are measured with when the request names none.
DEFAULT_BASE_MODEL = os.environ.get("DEFAULT_BASE_MODEL", "embedded")

# Per-team limits on queued work (finetune_hub.quotas): past them a request is refused (429).
TEAM_MAX_QUEUED_RUNS = int(os.environ.get("TEAM_MAX_QUEUED_RUNS", 20))
TEAM_MAX_QUEUED_EVALUATIONS = int(os.environ.get("TEAM_MAX_QUEUED_EVALUATIONS", 50))

# Metric code: requests name metrics from an allow-list (evaluation.metrics). An operator may
# add local evaluate modules by name ("name=/path/to/module.py,other=/path/dir") and may let
# requests name hub metrics, which downloads and runs their scripts: both are off by default.
EXTRA_METRIC_MODULES = dict(
    item.split("=", 1)
    for item in os.environ.get("EXTRA_METRIC_MODULES", "").split(",")
    if "=" in item
)
ALLOW_HUB_METRICS = os.environ.get("ALLOW_HUB_METRICS", "0") == "1"

# Hub models: offline-first. HF_HUB_OFFLINE=1 never contacts the hub (only cached models);
# otherwise a request waits at most HUB_TIMEOUT seconds for a model's config and tokenizer,
# and workers download weights. HF_HUB_CACHE: where (huggingface_hub's default otherwise).
HF_HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
HF_HUB_CACHE = os.environ.get("HF_HUB_CACHE") or None
HUB_TIMEOUT = float(os.environ.get("HUB_TIMEOUT", 2))

# Seconds without a heartbeat after which the periodic reaper takes back a running run or
# evaluation (its worker or process died).
STALE_AFTER_S = float(os.environ.get("STALE_AFTER_S", 120))
