"""The webmail's Filters page: ``GET /filters`` (the page), ``GET /filters/state`` and
``POST /filters/state`` (the rules and the raw script of the account's managed Sieve script,
sieve/managed.py). The out-of-office form on the same page goes through JMAP
VacationResponse (web/jmap/vacation.py): one state, the managed script.

A script that does not compile is refused with the compiler's message, line and column (of
the raw script as the user typed it), for the page to show beside the editor; nothing is
written then. Same session and CSRF rules as every other webmail POST (web/webmail.py).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..sieve import managed
from ..sieve.errors import SieveError
from ..store.api import SieveConflict

MAX_STATE_BYTES = 256 * 1024


def _rules_json(state: managed.ManagedState) -> list[dict[str, Any]]:
    return [{"field": r.field, "contains": r.contains, "action": r.action, "folder": r.folder,
             "address": r.address, "keepCopy": r.keep_copy} for r in state.rules]


def _rule(obj: Any) -> managed.Rule:
    if not isinstance(obj, dict):
        raise managed.StateError("a rule is an object")
    renamed = {("keep_copy" if k == "keepCopy" else k): v for k, v in obj.items()}
    return managed.rule_from(renamed)


async def _read_body(request: Request, limit: int) -> bytes | None:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class FiltersPage:
    def __init__(self, mail: Any, page: Path, headers: dict[str, str]) -> None:
        self.mail = mail                                  # web/webmail.py's Webmail: sessions, CSRF
        self.page = page.read_text(encoding="utf-8")
        self.headers = headers

    async def show(self, request: Request) -> Response:
        found = await self.mail._session(request)
        if found is None:
            return RedirectResponse("/login", status_code=303, headers=self.headers)
        page = self.page.replace("{{csrf_token}}", html.escape(found[1].csrf_token, quote=True))
        return HTMLResponse(page, headers=self.headers)

    async def get_state(self, request: Request) -> Response:
        found = await self.mail._session(request)
        if found is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        state, active = await managed.load(self.mail.ctx.store, found[1].account.id)
        return JSONResponse({"rules": _rules_json(state), "raw": state.raw, "active": active,
                             "vacation": asdict(state.vacation), "base": managed.fingerprint(state)},
                            headers={"Cache-Control": "no-store"})

    async def put_state(self, request: Request) -> Response:
        found = await self.mail._session(request)
        if found is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        _, info = found
        if not self.mail._same_origin(request) or not self.mail._csrf_ok(request, info):
            return JSONResponse({"error": "CSRF check failed"}, status_code=403)
        body = await _read_body(request, MAX_STATE_BYTES)
        try:
            args = json.loads(body) if body is not None else None
        except ValueError:
            args = None
        if not isinstance(args, dict) or not isinstance(args.get("rules"), list) or not isinstance(args.get("raw"), str) \
                or not isinstance(args.get("base", ""), str):
            return JSONResponse({"error": {"message": "expected {rules: [...], raw: string, base: string}", "line": 0,
                                           "column": 0}}, status_code=400)
        store, account_id = self.mail.ctx.store, info.account.id
        base = args.get("base")

        def edit(current: managed.ManagedState) -> managed.ManagedState:
            # The rules and raw tail from the page, the vacation as it is now (JMAP may change
            # it between the page's load and its save: merged). Rules or a raw tail changed
            # since the page loaded them (``base``: a ManageSieve PUTSCRIPT of the script,
            # another window) are not written over: the user reloads and sees them.
            if base and managed.fingerprint(current) != base:
                raise managed.ChangedElsewhere
            return replace(current, rules=rules, raw=raw)

        try:
            rules = tuple(_rule(r) for r in args["rules"])
            raw = args["raw"]
            state = await managed.update(store, account_id, edit, quota=self.mail.ctx.config.sieve)
        except managed.ChangedElsewhere:
            return JSONResponse({"error": {"message": "the filters were changed elsewhere since this page loaded "
                                           "them (ManageSieve, another window); reload to see them", "line": 0,
                                           "column": 0}, "where": "rules", "changed": True}, status_code=409)
        except SieveConflict:
            return JSONResponse({"error": {"message": "the filters kept changing while saving; try again",
                                           "line": 0, "column": 0}, "where": "rules"}, status_code=409)
        except (managed.StateError, SieveError) as exc:
            where = "raw" if isinstance(exc, SieveError) else "rules"
            return JSONResponse({"error": managed.error_json(exc), "where": where}, status_code=400)
        self.mail.ctx.log.info("webmail filters saved", user=info.account.address, rules=len(rules))
        return JSONResponse({"ok": True, "rules": _rules_json(state), "raw": state.raw,
                             "base": managed.fingerprint(state)})
