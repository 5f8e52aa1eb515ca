"""The MTA-STS policy host (RFC 8461 3.2): ``GET /.well-known/mta-sts.txt`` on Host
``mta-sts.<domain>`` for every local domain; any other host gets 404, so the policy of a
domain this server does not serve is never published by accident."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..discovery import mta_sts_policy

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 3.2
HOST_LABEL = "mta-sts."  # RFC 8461 3.2: the policy host is "mta-sts" prepended to the domain


def routes(ctx: Any) -> list[BaseRoute]:
    async def policy(request: Request) -> Response:
        host = (request.url.hostname or "").lower().rstrip(".")
        domain = host[len(HOST_LABEL):] if host.startswith(HOST_LABEL) else ""
        if not domain or not await ctx.store.is_local_domain(domain):
            return PlainTextResponse("no MTA-STS policy here\n", status_code=404)
        # RFC 8461 3.2: media type text/plain; the policy is served as is, never redirected.
        return PlainTextResponse(mta_sts_policy(ctx.config), media_type="text/plain",
                                 headers={"Cache-Control": "max-age=300"})

    return [Route(POLICY_PATH, policy, methods=["GET"])]
