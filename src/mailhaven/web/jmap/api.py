"""JMAP over HTTP (RFC 8620): the session resource, the API endpoint, blob upload and
download, and push over EventSource.

Request-level errors are RFC 7807 problem documents (RFC 8620 3.6.1): ``notJSON``,
``notRequest``, ``unknownCapability`` and ``limit`` with the limit named. Method calls
run in order; a call's arguments may refer to earlier results (``#name`` with
``resultOf``/``name``/``path``, RFC 8620 3.7) and to objects created earlier in the same
request (``#creationId``, 3.3). A method-level error answers that call alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ...logs import Log
from ...store.api import StorageFull
from ..auth import AuthError, Caller, authenticate
from . import arguments, bounds, core, email_get, email_query, email_set, mailbox, submission  # noqa: F401 - register
from .blobs import UploadTooLarge, blob_file, owns_blob, read_blob_for, stored_blob, stream_upload
from .registry import CAPABILITY_OF, CORE, MAIL, METHODS, QUOTA, SUBMISSION, Call, MethodError, ids
from .sievescript import SIEVE, script_state, sieve_capability  # registers SieveScript/*
from .state import account_state
from .vacation import VACATION, vacation_state

LIMITS: dict[str, Any] = {
    "maxSizeUpload": 50 * 1024 * 1024,
    "maxConcurrentUpload": 4,
    "maxSizeRequest": 10 * 1024 * 1024,
    "maxConcurrentRequests": 8,
    "maxCallsInRequest": 64,
    "maxObjectsInGet": 1000,
    "maxObjectsInSet": 1000,
    "collationAlgorithms": ["i;ascii-casemap", "i;unicode-casemap"],
}
MAIL_CAPABILITY = {"maxMailboxesPerEmail": 1, "maxMailboxDepth": None, "maxSizeMailboxName": 255,
                   "maxSizeAttachmentsPerEmail": 50 * 1024 * 1024,
                   "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "from", "to", "subject"],
                   "mayCreateTopLevelMailbox": True}
SUBMISSION_CAPABILITY = {"maxDelayedSend": 0, "submissionExtensions": {}}
log = Log("jmap")


NOT_ENOUGH_SPACE = "not enough disk space on the server, try again later"


def _problem(status: int, type_: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"urn:ietf:params:jmap:error:{type_}", "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _auth_failure(exc: AuthError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="Mailhaven", charset="UTF-8"'} if exc.challenge else {}
    if exc.status == 401 and not exc.challenge:
        headers = {"WWW-Authenticate": 'Bearer realm="Mailhaven"'}    # RFC 9110 15.5.2; no browser dialog
    if exc.retry_after > 0:
        headers["Retry-After"] = str(int(exc.retry_after) + 1)          # RFC 6585 4
    return JSONResponse({"type": "about:blank", "status": exc.status, "detail": exc.detail},
                        status_code=exc.status, headers=headers, media_type="application/problem+json")


class JMAP:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._running: dict[int, int] = {}
        """Account id -> requests in progress (maxConcurrentRequests, RFC 8620 2)."""

    async def _caller(self, request: Request, state_changing: bool) -> Caller | Response:
        try:
            return await authenticate(self.ctx, request, state_changing=state_changing)
        except AuthError as exc:
            return _auth_failure(exc)

    def _base(self, request: Request) -> str:
        """The base of the session's URLs: ``[http] public_url``, else the request's own
        scheme and host (as a trusted proxy forwarded them, web/proxy.py)."""
        public = getattr(getattr(self.ctx.config, "http", None), "public_url", "")
        if public:
            return str(public).rstrip("/")
        return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"

    # -- GET /.well-known/jmap (RFC 8620 2) --------------------------------------------------
    async def session(self, request: Request) -> Response:
        caller = await self._caller(request, state_changing=False)
        if isinstance(caller, Response):
            return caller
        account = caller.account
        account_id = ids.account(account.id)
        base = self._base(request)
        state = await account_state(self.ctx.store, account.id)
        body = {
            "capabilities": {CORE: LIMITS, MAIL: {}, SUBMISSION: {}, QUOTA: {}, VACATION: {}, SIEVE: {}},
            "accounts": {account_id: {
                "name": account.address, "isPersonal": True, "isReadOnly": False,
                "accountCapabilities": {MAIL: MAIL_CAPABILITY, SUBMISSION: SUBMISSION_CAPABILITY, QUOTA: {},
                                        VACATION: {}, SIEVE: sieve_capability(self.ctx.config)},
            }},
            "primaryAccounts": {MAIL: account_id, SUBMISSION: account_id, QUOTA: account_id, VACATION: account_id,
                                SIEVE: account_id},
            "username": account.address,
            "apiUrl": f"{base}/jmap/api",
            "downloadUrl": f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?type={{type}}",
            "uploadUrl": f"{base}/jmap/upload/{{accountId}}/",
            "eventSourceUrl": f"{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}",
            "state": state,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    # -- POST /jmap/api (RFC 8620 3) ----------------------------------------------------------
    async def api(self, request: Request) -> Response:
        caller = await self._caller(request, state_changing=True)
        if isinstance(caller, Response):
            return caller
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > LIMITS["maxSizeRequest"]:
                return _problem(400, "limit", "request too large", limit="maxSizeRequest")
        try:
            req = await bounds.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "notJSON", "the request body is not JSON")
        except bounds.TooLarge:
            return _problem(400, "limit", f"more than {bounds.MAX_VALUES} JSON values", limit="maxValues")
        if not await bounds.depth_ok(req):                    # RFC 8620 3.6.1: a limit of ours
            return _problem(400, "limit", f"JSON nested deeper than {bounds.MAX_DEPTH}", limit="maxDepth")
        if (not isinstance(req, dict) or not isinstance(req.get("using"), list)
                or not isinstance(req.get("methodCalls"), list)
                or not all(isinstance(u, str) for u in req["using"])):
            return _problem(400, "notRequest", "expected {using: [...], methodCalls: [...]}")
        using = frozenset(req["using"])
        unknown = [u for u in using if u not in (CORE, MAIL, SUBMISSION, QUOTA, VACATION, SIEVE)]
        if unknown:
            return _problem(400, "unknownCapability", f"unknown capability {unknown[0]}")
        calls = req["methodCalls"]
        if len(calls) > LIMITS["maxCallsInRequest"]:
            return _problem(400, "limit", "too many method calls", limit="maxCallsInRequest")
        for c in calls:
            if (not isinstance(c, list) or len(c) != 3 or not isinstance(c[0], str) or not isinstance(c[1], dict)
                    or not isinstance(c[2], str)):
                return _problem(400, "notRequest", "a method call is [name, arguments, callId]")
        call = Call(app=self.ctx, account=caller.account, using=using,
                    limits={k: v for k, v in LIMITS.items() if isinstance(v, int)})
        created = req.get("createdIds")
        if isinstance(created, dict):
            call.created_ids.update({str(k): str(v) for k, v in created.items()})
        running = self._running.get(caller.account.id, 0)
        if running >= LIMITS["maxConcurrentRequests"]:
            return _problem(400, "limit", "too many requests at once", limit="maxConcurrentRequests")
        self._running[caller.account.id] = running + 1
        try:
            return await self._calls(call, calls, created, caller.account.id)
        except bounds.TooLarge as exc:
            log.info("request refused", account=caller.account.address, limit=exc.what)
            if exc.what == "arguments":
                return _problem(400, "limit", "resolved arguments larger than maxSizeRequest",
                                limit="maxSizeRequest")
            return _problem(400, "limit", f"response larger than {bounds.MAX_SIZE_RESPONSE} bytes",
                            limit="maxSizeResponse")
        finally:
            self._running[caller.account.id] -= 1
            if not self._running[caller.account.id]:
                del self._running[caller.account.id]

    async def _calls(self, call: Call, calls: list[Any], created: Any, account_id: int) -> Response:
        """Run the calls in order; the whole response stays within MAX_SIZE_RESPONSE."""
        responses: list[list[Any]] = []
        size = 0
        for name, args, call_id in calls:
            for out_name, out_args in await self._run(call, name, args, responses):
                try:
                    size += await bounds.json_size(out_args, bounds.MAX_SIZE_RESPONSE - size)
                except bounds.TooLarge as exc:
                    raise bounds.TooLarge("response" if exc.what == "size" else "depth") from None
                responses.append([out_name, out_args, call_id])
        out: dict[str, Any] = {"methodResponses": responses,
                               "sessionState": await account_state(self.ctx.store, account_id)}
        if isinstance(created, dict):
            out["createdIds"] = call.created_ids
        body = await bounds.dumps(out, size)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def _run(self, call: Call, name: str, args: dict[str, Any],
                   responses: list[list[Any]]) -> list[tuple[str, dict[str, Any]]]:
        fn = METHODS.get(name)
        if fn is None:
            return [("error", {"type": "unknownMethod", "description": f"no method {name}"})]
        needed = CAPABILITY_OF.get(name, CORE)
        if needed not in call.using:
            return [("error", {"type": "unknownMethod", "description": f"{name} needs {needed} in using"})]
        try:
            resolved = _resolve_references(args, responses)
            if resolved is not args:
                # RFC 8620 3.7: references may repeat one large value; the arguments a method
                # sees are bounded as the request itself is (3.6.1 limit maxSizeRequest).
                try:
                    await bounds.json_size(resolved, LIMITS["maxSizeRequest"])
                except bounds.TooLarge:
                    raise bounds.TooLarge("arguments") from None
            arguments.check(resolved)
            result = await fn(call, resolved)
        except MethodError as exc:
            return [("error", exc.as_response())]
        except StorageFull:                  # RFC 8620 3.6.2: temporary, retry later
            log.warning("disk full", method=name)
            return [("error", {"type": "serverUnavailable", "description": NOT_ENOUGH_SPACE})]
        except bounds.TooLarge:
            raise
        except Exception:  # noqa: BLE001 - one failing call must not fail the request
            log.error("method failed", method=name, exc=True)
            return [("error", {"type": "serverFail", "description": "internal error"})]
        extra = result.pop("__extra__", None) if isinstance(result, dict) else None
        out = [(name, result)]
        if extra:
            out += extra
        return out

    # -- blobs (RFC 8620 6) -------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        caller = await self._caller(request, state_changing=True)
        if isinstance(caller, Response):
            return caller
        if request.path_params["account"] != ids.account(caller.account.id):
            return _problem(404, "notFound", "no such account")
        ctype = request.headers.get("content-type", "application/octet-stream")
        try:
            blob, size = await stream_upload(self.ctx.store, request.stream(), caller.account.id,
                                             LIMITS["maxSizeUpload"])
        except UploadTooLarge:
            return _problem(413, "limit", "upload too large", limit="maxSizeUpload")
        except StorageFull:
            log.warning("disk full", method="upload")
            return JSONResponse({"type": "about:blank", "status": 507, "detail": NOT_ENOUGH_SPACE},
                                status_code=507, headers={"Retry-After": "60"},   # RFC 4918 11.5
                                media_type="application/problem+json")
        return JSONResponse({"accountId": ids.account(caller.account.id), "blobId": blob,
                             "type": ctype, "size": size}, status_code=201)

    async def download(self, request: Request) -> Response:
        caller = await self._caller(request, state_changing=False)
        if isinstance(caller, Response):
            return caller
        if request.path_params["account"] != ids.account(caller.account.id):
            return _problem(404, "notFound", "no such account")
        blob_id = request.path_params["blob"]
        name = request.path_params.get("name") or "download"
        ctype = request.query_params.get("type") or "application/octet-stream"
        if "\r" in ctype or "\n" in ctype:
            ctype = "application/octet-stream"
        headers = {
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
            "Cache-Control": "private, immutable, max-age=31536000",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox"}
        path = blob_file(self.ctx.store, blob_id)
        if path is not None and await owns_blob(self.ctx.store, caller.account.id, blob_id[1:]):
            return FileResponse(path, media_type=ctype, headers=headers)   # a whole blob, from its file
        stored = await stored_blob(self.ctx.store, caller.account.id, blob_id)
        if stored is not None:                       # a large whole blob not in a file: in pieces
            digest, size = stored
            return StreamingResponse(self.ctx.store.blob_chunks(digest), media_type=ctype,
                                     headers={**headers, "Content-Length": str(size)})
        data = await read_blob_for(self.ctx.store, caller.account.id, blob_id)
        if data is None:
            return _problem(404, "notFound", "no such blob")
        return Response(data, media_type=ctype, headers=headers)

    # -- push (RFC 8620 7.3) ------------------------------------------------------------------
    async def eventsource(self, request: Request) -> Response:
        caller = await self._caller(request, state_changing=False)
        if isinstance(caller, Response):
            return caller
        try:
            ping = max(0, min(3600, int(request.query_params.get("ping", "0") or 0)))
        except ValueError:
            ping = 0
        close_after = request.query_params.get("closeafter", "no") == "state"
        account_id = caller.account.id
        store = self.ctx.store
        shutting_down = self.ctx.shutting_down

        async def events() -> Any:
            sub = store.subscribe(account_id)
            stopping: asyncio.Future[Any] | None = None
            try:
                version = await store.sieve_version(account_id)
                last = await _push_states(store, account_id, sieve=True)
                yield f"event: state\ndata: {json.dumps(_state_change(account_id, last))}\n\n"
                stopping = asyncio.ensure_future(shutting_down.wait())
                while not shutting_down.is_set():
                    # Shutdown ends the stream at once: uvicorn would otherwise wait out its
                    # graceful period for this response and then cancel it with a traceback.
                    change = asyncio.ensure_future(sub.get())
                    done, _ = await asyncio.wait((change, stopping), timeout=ping or 30,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    timed_out = change not in done
                    state: dict[str, str] | None = None
                    if timed_out:
                        change.cancel()
                        if stopping in done:
                            return
                        # A script written by another process on SQLite (the CLI) has no
                        # change on this feed: its version is looked at once per interval.
                        now = await store.sieve_version(account_id)
                        if now != version:
                            version = now
                            state = await _push_states(store, account_id, sieve=True)
                    else:
                        await asyncio.sleep(0.05)             # coalesce a burst of changes
                        kinds = {change.result().kind}
                        while getattr(sub, "pending", lambda: False)():
                            kinds.add(sub.get_nowait().kind)
                        # The scripts are read again only when a Sieve change came (store
                        # kind "sieve": any script written, activated, renamed or deleted).
                        if "sieve" in kinds:
                            version = await store.sieve_version(account_id)
                        state = await _push_states(store, account_id, sieve="sieve" in kinds)
                    changed = {t: v for t, v in (state or {}).items() if last.get(t) != v}
                    if changed:
                        last = {**last, **changed}
                        yield f"event: state\ndata: {json.dumps(_state_change(account_id, changed))}\n\n"
                        if close_after:
                            return
                    elif timed_out and ping:
                        yield f"event: ping\ndata: {json.dumps({'interval': ping})}\n\n"
            finally:
                if stopping is not None:
                    stopping.cancel()
                sub.close()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


_MAIL_TYPES = ("Mailbox", "Email", "Thread", "EmailDelivery", "EmailSubmission", "Identity")


async def _push_states(store: Any, account_id: int, *, sieve: bool) -> dict[str, str]:
    """Type -> state string as /get gives it: the mail types share the account's MODSEQ;
    SieveScript and VacationResponse (RFC 9661, RFC 8621 8) are read when ``sieve``."""
    mail = await account_state(store, account_id)
    states = dict.fromkeys(_MAIL_TYPES, mail)
    if sieve:
        states["SieveScript"] = await script_state(store, account_id)
        states["VacationResponse"] = await vacation_state(store, account_id)
    return states


def _state_change(account_id: int, types: dict[str, str]) -> dict[str, Any]:
    return {"@type": "StateChange", "changed": {ids.account(account_id): types}}


# -- result references (RFC 8620 3.7) --------------------------------------------------------
def _resolve_references(args: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    if not any(key.startswith("#") for key in args):
        return args
    out: dict[str, Any] = {}
    for key, value in args.items():
        if not key.startswith("#"):
            out[key] = value
            continue
        name = key[1:]
        if name in args:
            raise MethodError("invalidArguments", f"both {name} and #{name} given")
        if not isinstance(value, dict) or not all(isinstance(value.get(k), str)
                                                  for k in ("resultOf", "name", "path")):
            raise MethodError("invalidResultReference", f"#{name} is not a ResultReference")
        source = next((r for r in responses if r[2] == value["resultOf"]), None)
        if source is None or source[0] != value["name"]:
            raise MethodError("invalidResultReference", f"no {value['name']} response {value['resultOf']!r}")
        try:
            out[name] = _pointer(source[1], value["path"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise MethodError("invalidResultReference", f"path {value['path']} does not resolve") from None
    return out


def _pointer(doc: Any, path: str) -> Any:
    """RFC 6901 JSON pointer with JMAP's ``*`` (map over an array, flattening arrays)."""
    if path == "":
        return doc
    if not path.startswith("/"):
        raise ValueError("pointer must start with /")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    return _walk(doc, parts)


def _walk(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    head, rest = parts[0], parts[1:]
    if isinstance(doc, list):
        if head == "*":
            out: list[Any] = []
            for item in doc:
                value = _walk(item, rest)
                out.extend(value if isinstance(value, list) else [value])
            return out
        return _walk(doc[int(head)], rest)
    if isinstance(doc, dict):
        return _walk(doc[head], rest)
    raise TypeError("cannot descend")


def routes(ctx: Any) -> list[BaseRoute]:
    j = JMAP(ctx)
    return [
        Route("/.well-known/jmap", j.session, methods=["GET"]),
        Route("/jmap/session", j.session, methods=["GET"]),
        Route("/jmap/api", j.api, methods=["POST"]),
        Route("/jmap/upload/{account}/", j.upload, methods=["POST"]),
        Route("/jmap/download/{account}/{blob}/{name}", j.download, methods=["GET"]),
        Route("/jmap/eventsource", j.eventsource, methods=["GET"]),
    ]
