"""`polyroute serve`: one backend (hf or vllm) behind HTTP, for the remote backend to call.

Endpoints (JSON in; JSON or an Arrow IPC stream out, see `moe_core.backends.wire`):
  GET  /health        {"status": "ok"}; never needs the token (for load balancers and scripts)
  GET  /info          the model, the server's limits and the wire protocol version
  POST /count_tokens  {"texts": [...]} -> {"counts": [...]}
  POST /trace         {"batches": [[text, ...], ...], "save_logits": bool} -> one record batch per batch
  POST /generate      {"prompts": [...], "params": {...}, "plan": {...} | null} -> one record batch

A bearer token, when set, guards every endpoint but /health. Bad requests get a 4xx with a message
and the server goes on serving. One request at a time runs on the model: a request that waits for
it longer than `max_seconds` is turned away (503), and a trace that runs past `max_seconds` ends
its stream with an error after the batch in progress.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moe_core.backends import wire
from moe_core.backends.base import Backend, GenerationParams
from moe_core.errors import PolyrouteError
from moe_core.steering.plan import SteeringPlan

log = logging.getLogger("polyroute.serve")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may ask for."""

    max_request_bytes: int = 16 << 20
    max_texts: int = 4096
    max_new_tokens: int = 1024
    max_seconds: float = 600.0


class BadRequest(Exception):
    """A request the server refuses: `status` and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _texts(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise BadRequest(422, f"{name} must be a list of strings")
    if not value:
        raise BadRequest(422, f"{name} is empty: send at least one text")
    return value


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
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequest(400, f"the request body is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise BadRequest(422, "the request body must be a JSON object")
        return data

    def _too_big(self) -> str:
        return (
            f"the request is larger than this server's limit of {self.limits.max_request_bytes:,} bytes: "
            "send fewer texts per request (or start the server with a larger --max-request-mb)"
        )

    def _count_limit(self, n: int) -> None:
        if n > self.limits.max_texts:
            raise BadRequest(413, f"{n} texts in one request; this server takes at most {self.limits.max_texts}")

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
                "model": wire.info_to_dict(self.backend.info()),
                "max_tokens": self.backend.max_tokens,
                "limits": asdict(self.limits),
            }
        )

    async def count_tokens(self, request: Request) -> Response:
        texts = _texts((await self._json(request)).get("texts"), "texts")
        self._count_limit(len(texts))
        deadline = time.monotonic() + self.limits.max_seconds
        # Fast tokenizers refuse to be used from two threads at once, so counting waits its turn too.
        counts = await run_in_threadpool(self._run, deadline, self.backend.count_tokens, texts)
        return JSONResponse({"counts": counts})

    async def trace(self, request: Request) -> Response:
        data = await self._json(request)
        batches = data.get("batches")
        if not isinstance(batches, list) or not batches:
            raise BadRequest(422, "batches must be a non-empty list of lists of texts")
        batches = [_texts(batch, f"batch {i}") for i, batch in enumerate(batches)]
        self._count_limit(sum(map(len, batches)))
        save_logits = data.get("save_logits", False)
        if not isinstance(save_logits, bool):
            raise BadRequest(422, "save_logits must be true or false")
        deadline = time.monotonic() + self.limits.max_seconds
        # The first batch runs before the response starts, so a bad text still gets a plain 4xx.
        first = await run_in_threadpool(self._run, deadline, self.backend.trace, batches[0], save_logits=save_logits)
        return StreamingResponse(self._stream(first, batches[1:], save_logits, deadline), media_type=wire.MEDIA_TYPE)

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
        data = await self._json(request)
        prompts = _texts(data.get("prompts"), "prompts")
        self._count_limit(len(prompts))
        params = self._params(data.get("params", {}))
        plan = None if data.get("plan") is None else SteeringPlan.from_dict(data["plan"])
        deadline = time.monotonic() + self.limits.max_seconds
        result = await run_in_threadpool(self._run, deadline, self.backend.generate, prompts, params, plan)
        encoder = wire.StreamEncoder()
        body = encoder.batch(wire.encode(result.routing, result.texts)) + encoder.finish()
        return Response(body, media_type=wire.MEDIA_TYPE)

    def _params(self, raw: Any) -> GenerationParams:
        if not isinstance(raw, dict):
            raise BadRequest(422, "params must be a JSON object of generation settings")
        fields = GenerationParams.__dataclass_fields__
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise BadRequest(422, f"unknown generation setting {unknown[0]!r}: use {', '.join(fields)}")
        defaults = GenerationParams()
        for name, value in raw.items():
            # JSON numbers: an int is a fine float, but a bool is never a number here.
            wanted = type(getattr(defaults, name))
            ok = isinstance(value, wanted) or (wanted is float and isinstance(value, int))
            if not ok or (wanted is not bool and isinstance(value, bool)):
                raise BadRequest(422, f"generation setting {name} must be a {wanted.__name__}, not {value!r}")
        params = GenerationParams(**raw)
        if not isinstance(params.max_new_tokens, int) or not 1 <= params.max_new_tokens <= self.limits.max_new_tokens:
            raise BadRequest(
                422, f"max_new_tokens must be an integer from 1 to this server's limit {self.limits.max_new_tokens}"
            )
        return params


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
            f"binding to {host} exposes the model beyond this machine: pass --token T (or set POLYROUTE_TOKEN), "
            "or bind to 127.0.0.1"
        )


def serve(server: Server, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted."""
    import uvicorn

    check_binding(host, server.token)
    uvicorn.run(server.app(), host=host, port=port, log_level="warning", timeout_keep_alive=30, access_log=False)
