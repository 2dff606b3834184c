"""A minimal Django project whose ``reports`` app has SnailJob jobs (``reports/jobs.py``)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "snailjob.contrib.django",  # python manage.py snailjob_worker
    "reports",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
ROOT_URLCONF = "site_config.urls"

# The SNAIL_* settings without their prefix; the environment fills in the rest.
SNAILJOB = {
    "LABELS": "app:django-example",
    "IN_PROCESS": os.environ.get("EXAMPLE_SNAILJOB_IN_PROCESS") == "1",  # a client inside runserver
}
