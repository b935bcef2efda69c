"""`polyroute serve`: one backend (hf or vllm) behind HTTP, for the remote backend to call.

Endpoints (JSON in; JSON or an Arrow IPC stream out, see `moe_core.backends.wire`):
  GET  /health        {"status": "ok"}; never needs the token (for load balancers and scripts)
  GET  /info          the model, the server's limits and the wire protocol version
  POST /count_tokens  {"texts": [...]} -> {"counts": [...]}
  POST /trace         {"batches": [[text, ...], ...], "save_logits": bool} -> one record batch per batch
  POST /generate      {"prompts": [...], "params": {...}, "plan": {...} | null} -> one record batch

A bearer token, when set, guards every endpoint but /health. Every body is checked against its
schema (`moe_core.request_schema`) before any model work: bad requests get a 4xx with a message and
the server goes on serving; a 500 means a bug of the server, never of the client. One request at
a time runs on the model: a request that waits for it longer than `max_seconds` is turned away
(503), and a trace that runs past `max_seconds` ends its stream with an error after the batch in
progress.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moe_core.backends import wire
from moe_core.backends.base import Backend
from moe_core.errors import PolyrouteError
from moe_core.request_schema import BadRequest, Limits, count_body, generate_body, parse_body, trace_body

log = logging.getLogger("polyroute.serve")
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Server:
    """The HTTP face of one loaded backend."""

    def __init__(self, backend: Backend, *, token: str | None = None, limits: Limits | None = None) -> None:
        self.backend = backend
        self.token = token
        self.limits = limits or Limits()
        self._model = threading.Lock()  # hooks and generation state belong to one request at a time

    def app(self) -> Starlette:
        guarded = {
            "/info": (["GET"], self.info),
            "/count_tokens": (["POST"], self.count_tokens),
            "/trace": (["POST"], self.trace),
            "/generate": (["POST"], self.generate),
        }
        routes = [Route("/health", self.health, methods=["GET"])]
        routes += [Route(path, self._guard(handler), methods=methods) for path, (methods, handler) in guarded.items()]
        return Starlette(routes=routes)

    # plumbing --------------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Check the token, turn refusals into 4xx and surprises into a 500 that keeps the server up."""

        async def guarded(request: Request) -> Response:
            if self.token is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                    return _error(401, "missing or wrong token: send the token given to `polyroute serve --token`")
            try:
                return await handler(request)
            except BadRequest as refused:
                return _error(refused.status, str(refused))
            except PolyrouteError as error:
                return _error(422, str(error))
            except Exception as error:  # a bug: say so, log it, keep serving
                log.exception("%s failed", request.url.path)
                return _error(500, f"the server failed: {type(error).__name__}: {error}")

        return guarded

    async def _json(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            raise BadRequest(413, self._too_big())
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limits.max_request_bytes:
                raise BadRequest(413, self._too_big())
        return parse_body(bytes(body))

    def _too_big(self) -> str:
        return (
            f"the request is larger than this server's limit of {self.limits.max_request_bytes:,} bytes: "
            "send fewer texts per request (or start the server with a larger --max-request-mb)"
        )

    def _acquire(self, deadline: float) -> None:
        if not self._model.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise BadRequest(503, f"the model stayed busy for {self.limits.max_seconds:g} s: try again later")

    def _run(self, deadline: float, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._acquire(deadline)
        try:
            return work(*args, **kwargs)
        finally:
            self._model.release()

    # endpoints -------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "protocol": wire.PROTOCOL,
                "backend": self.backend.name,
                "capture": self.backend.capture_name,
                "model": wire.info_to_dict(self.backend.info()),
                "max_tokens": self.backend.max_tokens,
                "limits": asdict(self.limits),
            }
        )

    async def count_tokens(self, request: Request) -> Response:
        texts = count_body(await self._json(request), self.limits)
        deadline = time.monotonic() + self.limits.max_seconds
        # Fast tokenizers refuse to be used from two threads at once, so counting waits its turn too.
        counts = await run_in_threadpool(self._run, deadline, self.backend.count_tokens, texts)
        return JSONResponse({"counts": counts})

    async def trace(self, request: Request) -> Response:
        body = trace_body(await self._json(request), self.limits)
        deadline = time.monotonic() + self.limits.max_seconds
        # The first batch runs before the response starts, so a bad text still gets a plain 4xx.
        first = await run_in_threadpool(
            self._run, deadline, self.backend.trace, body.batches[0], save_logits=body.save_logits
        )
        return StreamingResponse(
            self._stream(first, body.batches[1:], body.save_logits, deadline), media_type=wire.MEDIA_TYPE
        )

    def _stream(self, first: Any, rest: list[list[str]], save_logits: bool, deadline: float) -> Iterator[bytes]:
        encoder = wire.StreamEncoder()
        yield encoder.batch(wire.encode(first))
        for index, texts in enumerate(rest, start=1):
            try:
                if time.monotonic() > deadline:
                    raise PolyrouteError(
                        f"the trace ran past this server's limit of {self.limits.max_seconds:g} s after {index} "
                        "batches: send fewer batches per request"
                    )
                batch = self._run(deadline, self.backend.trace, texts, save_logits=save_logits)
            except (PolyrouteError, BadRequest) as refused:
                yield encoder.finish(error=str(refused))
                return
            except Exception as error:
                log.exception("trace failed mid-stream")
                yield encoder.finish(error=f"the server failed: {type(error).__name__}: {error}")
                return
            yield encoder.batch(wire.encode(batch))
        yield encoder.finish()

    async def generate(self, request: Request) -> Response:
        asked = generate_body(await self._json(request), self.limits)
        deadline = time.monotonic() + self.limits.max_seconds
        result = await run_in_threadpool(
            self._run, deadline, self.backend.generate, asked.prompts, asked.params, asked.plan
        )
        encoder = wire.StreamEncoder()
        stream = encoder.batch(wire.encode(result.routing, result.texts)) + encoder.finish()
        return Response(stream, media_type=wire.MEDIA_TYPE)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_binding(host: str, token: str | None) -> None:
    """Anything but loopback needs a token: the routes are a model's internals and every request
    spends GPU time."""
    if not is_loopback(host) and not token:
        raise PolyrouteError(
            f"binding to {host} exposes the model beyond this machine: pass {{token}} T (or set POLYROUTE_TOKEN), "
            "or bind to 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """Refuse a port this process cannot listen on (taken, or privileged) before a model loads."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise PolyrouteError(
            f"cannot listen on {host}:{port} ({os.strerror(error.errno) if error.errno else error}): choose another "
            "{port} or {host}"
        ) from None


def serve(server: Server, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted."""
    import uvicorn

    check_binding(host, server.token)
    uvicorn.run(server.app(), host=host, port=port, log_level="warning", timeout_keep_alive=30, access_log=False)
