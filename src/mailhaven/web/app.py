"""The HTTP application: the webmail's pages and the JMAP API (RFC 8620) on one origin."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from . import acmechallenge, autoconfig, mtasts, webmail
from .auth import webmail_sessions
from .jmap import api
from .proxy import ProxyHeaders


def build_app(ctx: Any) -> Starlette:
    routes = [*acmechallenge.routes(ctx), *mtasts.routes(ctx), *autoconfig.routes(ctx),
              *api.routes(ctx), *webmail.routes(ctx, webmail_sessions(ctx))]
    http = getattr(ctx.config, "http", None)
    trusted = tuple(getattr(http, "trusted_proxies", ()) or ())
    return Starlette(routes=routes, middleware=[Middleware(ProxyHeaders, trusted=trusted)])


def build_challenge_app(ctx: Any) -> Starlette:
    """The plain port-80 listener: ACME http-01 (RFC 8555 8.3) and nothing else."""
    return Starlette(routes=acmechallenge.routes(ctx))
