"""crowdloop settings, every one read from the environment (12-factor).

CROWDLOOP_ENV is ``development`` (the default: embedded SQLite, a generated secret key, no broker)
or ``production`` (SECRET_KEY required, secure cookies and headers). DEBUG is off unless
DJANGO_DEBUG=1 asks for it, in either environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CROWDLOOP_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_number(name: str, default: float, kind: type, minimum: float | None) -> Any:
    value = os.environ.get(name)
    if value in (None, ""):
        number = default
    else:
        try:
            number = kind(value)
        except ValueError:
            kind_name = "an integer" if kind is int else "a number"
            raise ImproperlyConfigured(f"{name} must be {kind_name}, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _env_number(name, default, float, minimum)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _env_number(name, default, int, minimum)


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


def env_mapping(name: str) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE...]`` as a dict; a part without both sides is refused."""
    mapping: dict[str, str] = {}
    for part in env_list(name):
        key, sep, value = (side.strip() for side in part.partition("="))
        if not sep or not key or not value:
            raise ImproperlyConfigured(f"{name} must be NAME=PATH[,NAME=PATH...], not {part!r}.")
        if key in mapping:
            raise ImproperlyConfigured(f"{name} names {key!r} twice.")
        mapping[key] = value
    return mapping


CROWDLOOP_ENV = os.environ.get("CROWDLOOP_ENV", "development").strip().lower()
if CROWDLOOP_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("CROWDLOOP_ENV must be 'development' or 'production'.")
PRODUCTION = CROWDLOOP_ENV == "production"
DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        # Django's own rule for a weak key (check --deploy, security.W009), plus no key that is
        # blank or padded with whitespace, which a copy-paste or a quoted .env line leaves behind.
        weak = (
            len(key) < 50
            or len(set(key)) < 5
            or key.startswith("django-insecure-")
            or not key.strip()
            or key != key.strip()
        )
        if PRODUCTION and weak:
            raise ImproperlyConfigured(
                "SECRET_KEY is too weak for production: use at least 50 random characters, "
                "at least 5 of them different, no whitespace around it and no django-insecure- "
                "prefix."
            )
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when CROWDLOOP_ENV=production.")
    # Development: one random key per checkout, kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "axes",
    "annotate",
    "training",
    "review",
    "loop",
]

MIDDLEWARE = [
    # Health probes reach gunicorn by its own address over HTTP: answered before host checks.
    "config.healthz.HealthzMiddleware",
    # Then: every later reader of REMOTE_ADDR (the lockouts, the throttles) gets the client's.
    "config.client_address.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out admin login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://user:pass@host:5432/name), else SQLite under var/.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'crowdloop.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})
    # WAL: readers (the web process) never block the writer (an import, a worker) or wait for
    # it, and a commit appends to the log instead of rewriting pages through a rollback journal;
    # synchronous=NORMAL is the setting SQLite recommends with WAL (durable at checkpoints).
    DATABASES["default"]["OPTIONS"].update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests run on a file too, as production does: an in-memory test database is one connection
    # that the live server's thread would share with the test's, and sqlite3 can deadlock when two
    # threads use one connection at once.
    # One file per test process, so that two test runs on one checkout never share a database.
    DATABASES["default"]["TEST"] = {
        "NAME": str(VAR_DIR / f"test_crowdloop_{os.getpid()}.sqlite3")
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Served by Django itself (behind login for nothing but thumbnails and item images) when set.
SERVE_MEDIA = env_bool("SERVE_MEDIA", not PRODUCTION)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Checkpoints and release files live outside MEDIA_ROOT: they are never served as media.
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", VAR_DIR / "artifacts"))

LOGIN_URL = "admin:login"

# Redis and Celery. Every task runs in a worker process, never inside a web request, with or
# without Redis. With REDIS_URL, Redis is the broker and the result store. Without it (the
# embedded default) the broker is kombu's filesystem transport: each message is a file under
# CELERY_BROKER_DIR, so `make serve` and `make demo` run a real worker and beat with no server
# (bench/README.md: "The embedded broker"). Results are not kept there: the job rows (training
# runs, round requests, releases, loop steps) are the results. Only the test suite runs tasks
# eagerly (tests/conftest.py).
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_DIR = Path(os.environ.get("CELERY_BROKER_DIR", VAR_DIR / "broker"))
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_EAGER_PROPAGATES = True
# Longer than the longest task and any retry countdown, so Redis never redelivers a live task.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)
}
if not REDIS_URL:
    _queue_dir = CELERY_BROKER_DIR / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            # One folder in and out: every process on this machine reads and writes the same
            # queue files; a consumed message's file is deleted.
            "data_folder_in": str(_queue_dir),
            "data_folder_out": str(_queue_dir),
            "control_folder": str(CELERY_BROKER_DIR / "control"),
            "store_processed": False,
            "polling_interval": env_float("CELERY_BROKER_POLL_S", 0.5),
        }
    )
    for _folder in (_queue_dir, CELERY_BROKER_DIR / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
CELERY_BEAT_SCHEDULE_FILE = str(VAR_DIR / "celerybeat-schedule")

# Worker shutdown (config/celery.py): a worker told to stop lets its running tasks finish for this
# many seconds, then hands the rest back to the broker for another worker (0: wait forever for
# them). Keep it below the orchestrator's grace period (docker-compose.yml: stop_grace_period).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float(
    "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 60.0, minimum=0.0
)

# The cache holds the API's throttle counters (and failed token guesses), so every web process
# must share it: Redis when REDIS_URL is set; otherwise each process counts on its own.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "crowdloop",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Zooniverse (Panoptes). Without credentials the local sandbox is used.
PANOPTES_ENDPOINT = os.environ.get("PANOPTES_ENDPOINT", "").rstrip("/")
PANOPTES_CLIENT_ID = os.environ.get("PANOPTES_CLIENT_ID", "")
PANOPTES_CLIENT_SECRET = os.environ.get("PANOPTES_CLIENT_SECRET", "")
PANOPTES_USERNAME = os.environ.get("PANOPTES_USERNAME", "")
PANOPTES_PASSWORD = os.environ.get("PANOPTES_PASSWORD", "")
PANOPTES_PROJECT_ID = os.environ.get("PANOPTES_PROJECT_ID", "")
PANOPTES_TIMEOUT = env_float("PANOPTES_TIMEOUT", 30.0, minimum=0.1)

# Zooniverse client limits: the connect timeout, the tries per request, and the wall budget of one
# sync or push (kept under half the broker's visibility timeout by the client), and the largest
# classification export a pull downloads.
PANOPTES_CONNECT_TIMEOUT = env_float("PANOPTES_CONNECT_TIMEOUT", 5.0, minimum=0.1)
PANOPTES_MAX_ATTEMPTS = env_int("PANOPTES_MAX_ATTEMPTS", 6, minimum=1)
PANOPTES_BUDGET = env_float("PANOPTES_BUDGET", 1800.0, minimum=1.0)
ZOONIVERSE_EXPORT_MAX_BYTES = env_int("ZOONIVERSE_EXPORT_MAX_BYTES", 2 * 1024**3, minimum=1)

# Europeana Search API.
EUROPEANA_API_KEY = os.environ.get("EUROPEANA_API_KEY", "")
EUROPEANA_API_URL = os.environ.get(
    "EUROPEANA_API_URL", "https://api.europeana.eu/record/v2/search.json"
)

# Images.
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 20 * 1024 * 1024)
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 256)

# Item manifests: a local image path must lie, symlinks resolved, in the manifest's own folder or
# in one of these absolute folders (comma-separated); anything else reads as a missing file.
IMPORT_ROOTS = env_list("IMPORT_ROOTS")
for _root in IMPORT_ROOTS:
    if not Path(_root).is_absolute() or Path(_root).resolve() == Path("/"):
        raise ImproperlyConfigured(
            f"IMPORT_ROOTS must list absolute folders other than '/', not {_root!r}."
        )

# Aggregation and retirement.
AGGREGATION_METHOD = os.environ.get("AGGREGATION_METHOD", "dawid_skene")
RETIRE_CONFIDENCE = env_float("RETIRE_CONFIDENCE", 0.95)
# The model is "confident" on a concept at this score one way or the other; with a confident crowd
# on the other side, the item is flagged as a model-vs-crowd conflict (training.services.conflicts).
MODEL_CONFLICT_CONFIDENCE = env_float("MODEL_CONFLICT_CONFIDENCE", 0.8, minimum=0.5)
RETIRE_MIN_CLASSIFICATIONS = env_int("RETIRE_MIN_CLASSIFICATIONS", 3)

# Training: the defaults of a requested run (a request's own parameters win), when one is
# requested on its own, and which final labels it learns from.
TRAINING_BACKBONE = os.environ.get("TRAINING_BACKBONE", "small_cnn")
TRAINING_EPOCHS = env_int("TRAINING_EPOCHS", 12, minimum=1)
# "auto" is CUDA when there is one, else the CPU; scoring uses the same device.
TRAINING_DEVICE = os.environ.get("TRAINING_DEVICE", "auto").strip().lower()
if not re.fullmatch(r"auto|cpu|mps|xpu|cuda(:\d+)?", TRAINING_DEVICE):
    raise ImproperlyConfigured(
        f"TRAINING_DEVICE must be auto, cpu, cuda, cuda:N, mps or xpu, not {TRAINING_DEVICE!r}."
    )
# Pretrained weights (ml.weights). Backbone name -> weights spec (NAME=SPEC[,NAME=SPEC...]): a
# torchvision weights name (IMAGENET1K_V2, DEFAULT...) fetched once into ARTIFACT_ROOT/weights
# and hash-checked, an http(s) URL ending in #sha256=<64 hex>, or a local file path. A backbone
# with weights trains a head on cached features by default.
TRAINING_BACKBONE_WEIGHTS = env_mapping("TRAINING_BACKBONE_WEIGHTS")
# Where torchvision weights names are fetched from instead of https://download.pytorch.org/models/
# (a mirror of that folder); empty: torchvision's own URLs.
TRAINING_WEIGHTS_BASE_URL = os.environ.get("TRAINING_WEIGHTS_BASE_URL", "").strip()
if TRAINING_WEIGHTS_BASE_URL and not re.fullmatch(r"https?://[^\s/]+(/\S*)?",
                                                  TRAINING_WEIGHTS_BASE_URL):
    raise ImproperlyConfigured(
        f"TRAINING_WEIGHTS_BASE_URL must be an http(s) URL, not {TRAINING_WEIGHTS_BASE_URL!r}."
    )


def _check_backbone_weights() -> None:
    from ml.model_names import MODEL_NAMES
    from ml.weights import WeightsError, parse_weights_spec

    for name, spec in TRAINING_BACKBONE_WEIGHTS.items():
        if name not in MODEL_NAMES:
            raise ImproperlyConfigured(
                f"TRAINING_BACKBONE_WEIGHTS names {name!r}, which is not one of "
                f"{', '.join(MODEL_NAMES)}."
            )
        try:
            parse_weights_spec(name, spec, cache_dir=".")
        except WeightsError as exc:
            raise ImproperlyConfigured(f"TRAINING_BACKBONE_WEIGHTS: {exc}.") from None


_check_backbone_weights()
# End of the pretrained weights block.
# New final labels since the last run that request a retrain on their own (0: never).
TRAIN_AFTER_NEW_LABELS = env_int("TRAIN_AFTER_NEW_LABELS", 200, minimum=0)
TRAINING_MIN_ITEMS = env_int("TRAINING_MIN_ITEMS", 10, minimum=1)
# A crowd label is a training target with at least this many votes and this confidence; its
# weight grows with the votes up to TRAINING_FULL_EVIDENCE_VOTES; a curator's decision weighs
# TRAINING_CURATED_WEIGHT.
TRAINING_MIN_VOTES = env_int("TRAINING_MIN_VOTES", 2, minimum=1)
TRAINING_MIN_CONFIDENCE = env_float("TRAINING_MIN_CONFIDENCE", 0.5, minimum=0.0)
if TRAINING_MIN_CONFIDENCE > 1.0:
    raise ImproperlyConfigured("TRAINING_MIN_CONFIDENCE must be a probability, at most 1.")
TRAINING_FULL_EVIDENCE_VOTES = env_int("TRAINING_FULL_EVIDENCE_VOTES", 5, minimum=1)
TRAINING_CURATED_WEIGHT = env_float("TRAINING_CURATED_WEIGHT", 1.0, minimum=0.0)
TRAINING_PATIENCE = env_int("TRAINING_PATIENCE", 5, minimum=1)

# Training jobs: a claim's lease (renewed every epoch, so longer than the slowest epoch), tries
# per run and per scoring chunk, when the reconciler re-sends a stranded run, and the hard time
# limit of a training task (0: six hours, or less to stay under the visibility timeout).
TRAINING_LEASE_SECONDS = env_int("TRAINING_LEASE_SECONDS", 900, minimum=1)
TRAINING_MAX_ATTEMPTS = env_int("TRAINING_MAX_ATTEMPTS", 3, minimum=1)
TRAINING_REQUEUE_AFTER_SECONDS = env_float("TRAINING_REQUEUE_AFTER_SECONDS", 300.0, minimum=1.0)
TRAINING_TIME_LIMIT_SECONDS = env_int("TRAINING_TIME_LIMIT_SECONDS", 0, minimum=0)

# Scoring the pool with a new model version: images per batch, items per chunk (one task each),
# and whether a candidate that was not promoted is scored too.
TRAINING_SCORE_BATCH_SIZE = env_int("TRAINING_SCORE_BATCH_SIZE", 64, minimum=1)
TRAINING_SCORE_CHUNK_SIZE = env_int("TRAINING_SCORE_CHUNK_SIZE", 2000, minimum=1)
PROPOSALS_TOTAL_CACHE_SECONDS = env_int("PROPOSALS_TOTAL_CACHE_SECONDS", 300, minimum=0)
TRAINING_SCORE_CANDIDATES = env_bool("TRAINING_SCORE_CANDIDATES", False)

# -- Client addresses, throttles and the admin login ---------------------------------------------
# The proxies whose X-Forwarded-For is believed (addresses or CIDR ranges, comma-separated); empty:
# the header is ignored and the client is the peer (config/client_address.py).
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES must list IP addresses or CIDR ranges, not {_proxy!r}."
        ) from None


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, ``N/second``, ``N/minute``, ``N/hour`` or ``N/day`` (N at least 1)."""
    value = os.environ.get(name, "").strip() or default
    match = re.fullmatch(r"(\d+)/(s|sec|second|m|min|minute|h|hour|d|day)", value)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(f"{name} must be a rate like 60/minute, not {value!r}.")
    return value


# django-axes locks the admin login for one username from one address (a user elsewhere, or
# another user here, still logs in) after ADMIN_LOGIN_FAILURE_LIMIT wrong passwords, for
# ADMIN_LOGIN_COOLOFF_MINUTES. It reads the address from REMOTE_ADDR only, as set above.
AUTHENTICATION_BACKENDS = [
    "config.login_lockout.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
ADMIN_LOGIN_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
ADMIN_LOGIN_COOLOFF_MINUTES = env_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15, minimum=1)
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ADMIN_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "config.client_address.request_client_address"
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_RESET_ON_SUCCESS = True
# No banner on every start; lockouts are still logged (WARNING, django-axes' "axes" logger).
AXES_VERBOSE = False
# -- end client addresses, throttles and the admin login -----------------------------------------

REST_FRAMEWORK = {
    # Throttles key on REMOTE_ADDR alone, never on a header the client writes; the client
    # address middleware has already put the address a trusted proxy reported there.
    "NUM_PROXIES": 0,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # Token auth whose failures are counted per client and per key prefix: guesses end in 429.
        "annotate.api.authentication.ThrottledTokenAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "annotate.api.schema.PolicyAutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("API_THROTTLE_ANON", "60/minute"),
        "user": env_rate("API_THROTTLE_USER", "1200/minute"),
        # Failed tokens per client address, and per key prefix (annotate/api/authentication.py).
        "auth_failures": env_rate("API_THROTTLE_AUTH_FAILURES", "20/hour"),
        "auth_prefix_failures": env_rate("API_THROTTLE_AUTH_PREFIX_FAILURES", "20/hour"),
    },
}

# The OpenAPI schema (/api/v1/schema/) and the docs page built from it (/api/v1/docs/).
SPECTACULAR_SETTINGS = {
    "TITLE": "crowdloop API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "Crowd labels, curator reviews, rounds, training runs, model versions and dataset "
        "releases of crowdloop. Authenticate with a session or `Authorization: Token <key>`. "
        "Every operation states the permission it needs and the roles (viewer, curator, staff, "
        "admin) that hold it in `x-required-permission`."
    ),
    # Rounds and jobs (releases, training runs) have a ``status`` with different choices.
    "ENUM_NAME_OVERRIDES": {
        "RoundStatusEnum": "annotate.models.Round.Status",
        "JobStatusEnum": "annotate.models.DatasetRelease.Status",
        # An item's review state, and a decision's state before and after it.
        "ReviewStateEnum": "annotate.models.Item.ReviewState",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # panoptes-client logs request bodies at DEBUG; never below INFO here.
        "panoptes_client": {"level": "INFO"},
        "django.db.backends": {"level": "INFO"},
        # The in-memory transport of the embedded default warns about its missing hostname.
        "kombu.connection": {"level": "ERROR"},
    },
}

# Security headers, on in production.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
# The Content-Security-Policy header of every page that sets none; empty: the default policy of
# config/middleware.py (self only, no inline scripts).
CONTENT_SECURITY_POLICY = os.environ.get("CONTENT_SECURITY_POLICY", "").strip()

# -- Image hosts ---------------------------------------------------------------------------------
# Hosts whose https images the screens show directly (exact names, or *.example.org for its
# subdomains); every other image is shown from the copy a worker fetched and stored, or not at
# all. The default policy's img-src lists the same hosts (config/middleware.py).
IMAGE_HOSTS = tuple(host.lower() for host in env_list("IMAGE_HOSTS"))
_label = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
for _host in IMAGE_HOSTS:  # a name with a dot whose last label starts with a letter: no IP
    if not re.fullmatch(rf"(\*\.)?({_label}\.)+[a-z]([a-z0-9-]*[a-z0-9])?", _host):
        raise ImproperlyConfigured(
            f"IMAGE_HOSTS must be host names (images.example.org or *.example.org), separated by "
            f"commas; {_host!r} is not one (no scheme, port, path or IP address)."
        )
# -- end image hosts -----------------------------------------------------------------------------

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# The port `make demo` serves on (PORT in the environment).
DEMO_PORT = env_int("PORT", 8000)

# Where volunteers' browsers fetch images that only exist here (items with a local file):
# Zooniverse subjects of local-only images point at PUBLIC_MEDIA_BASE_URL + the file's path under
# MEDIA_ROOT; with it empty, the images are uploaded to Zooniverse instead.
PUBLIC_MEDIA_BASE_URL = os.environ.get(
    "PUBLIC_MEDIA_BASE_URL", "" if PRODUCTION else f"http://127.0.0.1:{DEMO_PORT}/media"
)

# Active learning: the strategy choosing each round, its random control share, the Monte-Carlo
# samples BALD draws, and the largest share of a round given to another vote on contested items.
ACQUISITION_STRATEGY = os.environ.get("ACQUISITION_STRATEGY", "entropy")
ACQUISITION_RANDOM_SHARE = env_float("ACQUISITION_RANDOM_SHARE", 0.15)
ACQUISITION_MC_SAMPLES = env_int("ACQUISITION_MC_SAMPLES", 20)
ACQUISITION_MAX_RELABEL_SHARE = env_float("ACQUISITION_MAX_RELABEL_SHARE", 0.3)
# Relabel-or-new (contested items compete for a round's places) is off by default: in both
# simulations (bench/README.md) it cost classifications with a mostly careful crowd.
ACQUISITION_RELABEL = env_bool("ACQUISITION_RELABEL", False)

# The loop (loop.services.steps): what runs by itself after a pull.
# A full Dawid-Skene pass at most this often; in between, an aggregation after a pull re-scores
# only the items with new votes on the stored volunteer skills.
AGGREGATION_FULL_EVERY_S = env_float("AGGREGATION_FULL_EVERY_S", 600.0)
# An aggregation waits this long after the trigger, so a burst of pulls is served by one.
LOOP_AGGREGATE_DELAY_S = env_float("LOOP_AGGREGATE_DELAY_S", 5.0)
# Choose and push the next round by itself when the active one is nearly done: this share of its
# subjects retired, or fewer than ROUND_NEXT_WHEN_OPEN_BELOW still open (0: off).
AUTO_ROUNDS = env_bool("AUTO_ROUNDS", False)
ROUND_NEXT_WHEN_RETIRED = env_float("ROUND_NEXT_WHEN_RETIRED", 0.8)
ROUND_NEXT_WHEN_OPEN_BELOW = env_int("ROUND_NEXT_WHEN_OPEN_BELOW", 0)
ROUND_NEXT_SIZE = env_int("ROUND_NEXT_SIZE", 100)
if not 0.0 < ROUND_NEXT_WHEN_RETIRED <= 1.0:
    raise ImproperlyConfigured("ROUND_NEXT_WHEN_RETIRED must be a share above 0 and at most 1.")
if ROUND_NEXT_SIZE < 1 or ROUND_NEXT_WHEN_OPEN_BELOW < 0:
    raise ImproperlyConfigured("ROUND_NEXT_SIZE must be at least 1, ROUND_NEXT_WHEN_OPEN_BELOW 0+.")

# Celery beat: the periodic pull, the loop's reconciler, the nightly retrain and the training
# reconcilers. Every message expires before the next one of its kind is due, so a late tick is
# dropped, not doubled.
from training.schedule import BEAT_SCHEDULE as TRAINING_BEAT_SCHEDULE  # noqa: E402

ZOONIVERSE_SYNC_INTERVAL = env_float("ZOONIVERSE_SYNC_INTERVAL", 300.0)
CELERY_BEAT_SCHEDULE = {
    "loop-pull": {
        "task": "loop.tasks.loop_pull",
        "schedule": ZOONIVERSE_SYNC_INTERVAL,
        "options": {"expires": max(10.0, ZOONIVERSE_SYNC_INTERVAL - 20)},
    },
    "loop-reconcile": {
        "task": "loop.tasks.loop_reconcile",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    **TRAINING_BEAT_SCHEDULE,
    # Remote item images of every import, fetched a slice a minute (annotate.tasks).
    "annotate-fetch-item-images": {
        "task": "annotate.tasks.fetch_item_images",
        "schedule": 60.0,
        "kwargs": {"chain": False},
        "options": {"expires": 50},
    },
}
