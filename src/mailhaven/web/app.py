"""The HTTP application: the webmail's pages and the JMAP API (RFC 8620) on one origin."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from . import webmail
from .auth import webmail_sessions
from .jmap import api


def build_app(ctx: Any) -> Starlette:
    routes = [*api.routes(ctx), *webmail.routes(ctx, webmail_sessions(ctx))]
    return Starlette(routes=routes)
