"""The REST API: :func:`build_app` (from :class:`~service.settings.Settings`) and
:func:`create_app` (from a database URL), in :mod:`service.api.app`; the routes in
:mod:`service.api.routes`, what they depend on in :mod:`service.api.deps`."""

from service.api.app import build_app, create_app

__all__ = ["build_app", "create_app"]
