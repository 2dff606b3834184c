"""Integrations with web frameworks: ``snailjob.contrib.django``,
``snailjob.contrib.asgi`` (FastAPI, Starlette) and ``snailjob.contrib.flask``;
``snailjob.contrib.propagation`` (and ``snailjob.contrib.django.middleware``):
retries across services, with the Java client's HTTP headers.

Each sits above the client and uses its public API; the framework is
imported only by its own module (install the matching extra).
"""
