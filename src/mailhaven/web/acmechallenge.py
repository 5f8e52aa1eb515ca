"""ACME http-01 (RFC 8555 8.3): ``GET /.well-known/acme-challenge/TOKEN`` answers the key
authorization of a challenge under validation now, on any Host; anything else is 404."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..certs.challenges import CHALLENGE_PATH


def routes(ctx: Any) -> list[BaseRoute]:
    async def challenge(request: Request) -> Response:
        challenges = ctx.extras.get("acme")
        answer = challenges.http_answer(request.path_params["token"]) if challenges else None
        if answer is None:
            return PlainTextResponse("no such challenge\n", status_code=404)
        # RFC 8555 8.3: the body is the key authorization; application/octet-stream works too
        return PlainTextResponse(answer, media_type="application/octet-stream")

    return [Route(CHALLENGE_PATH + "{token}", challenge, methods=["GET"])]
