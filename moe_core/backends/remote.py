"""The remote backend: a client of `polyroute serve` running on a GPU machine.

It behaves like a local backend (the Backend contract) and returns the same arrays, so the
caller's store stays the only writer. Traces go out many batches per request and come back as an
Arrow stream, one record batch per batch, so the server never waits for the client between
batches. Every failure becomes a `RemoteError` that says which server and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

import httpx

from moe_core.backends import wire
from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.errors import RemoteError
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering.plan import SteeringPlan

CONNECT_SECONDS = 10.0


def normalise_url(url: str) -> str:
    """`host:port` or `http://host:port/` -> `http://host:port`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return url


class RemoteBackend(Backend):
    """One `polyroute serve` process, reached over HTTP."""

    name = "remote"

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = normalise_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(CONNECT_SECONDS), trust_env=False
        )
        found = self._json("GET", "/info")
        if found.get("protocol") != wire.PROTOCOL:
            raise RemoteError(
                f"the server at {self.url} speaks protocol {found.get('protocol')}, this client {wire.PROTOCOL}: "
                "run the same Polyroute version on both machines"
            )
        self.server_backend: str = found["backend"]
        # The server's routing capture ("unknown" from a server older than the field).
        self.capture_name = str(found.get("capture", "unknown"))
        self._info = wire.info_from_dict(found["model"])
        self._max_tokens = int(found["max_tokens"])
        self.limits: dict[str, Any] = found["limits"]
        # A batch may take the server up to its own time limit; waiting longer than that means it is gone.
        self._client.timeout = httpx.Timeout(CONNECT_SECONDS, read=float(self.limits["max_seconds"]) + 30)

    def close(self) -> None:
        self._client.close()

    def info(self) -> ModelInfo:
        return self._info

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    # requests --------------------------------------------------------------------------------

    def _failure(self, response: httpx.Response) -> RemoteError:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        if response.status_code == 401:
            return RemoteError(
                f"the server at {self.url} refused the token ({message}); pass {{token}} (or set POLYROUTE_TOKEN) "
                "to the token the server was started with"
            )
        return RemoteError(f"the server at {self.url} refused the request ({response.status_code}): {message}")

    def _unreachable(self, error: httpx.HTTPError) -> RemoteError:
        return RemoteError(
            f"cannot reach the Polyroute server at {self.url} ({type(error).__name__}: {error}): start it with "
            "`polyroute serve --model DIR --port N` on the GPU machine, or check the URL"
        )

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        try:
            response = self._client.request(method, path, json=payload)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        if response.status_code != 200:
            raise self._failure(response)
        return response.json()

    def _stream(self, path: str, payload: Any) -> Iterator[tuple[RoutingBatch, list[str] | None]]:
        try:
            with self._client.stream("POST", path, content=json.dumps(payload).encode()) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._failure(response)
                try:
                    yield from wire.read_stream(response.iter_bytes())
                except httpx.HTTPError as error:
                    raise RemoteError(
                        f"the server at {self.url} stopped answering mid-request ({type(error).__name__}: {error})"
                    ) from error
        except wire.WireError as error:
            if error.server_message is not None:
                raise RemoteError(f"the server at {self.url} stopped: {error.server_message}") from error
            raise RemoteError(f"the server at {self.url} stopped answering mid-request: {error}") from error
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error

    # the contract ----------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        counts: list[int] = []
        for group in self._requests([[text] for text in texts]):
            counts += self._json("POST", "/count_tokens", {"texts": [text for (text,) in group]})["counts"]
        return counts

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        (routing,) = self.trace_batches([texts], save_logits=save_logits, plan=plan)
        return routing

    def trace_batches(
        self, batches: Iterable[Sequence[str]], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> Generator[RoutingBatch, None, None]:
        self.refuse_plan(plan)  # the server's /trace takes no plan
        for group in self._requests([list(batch) for batch in batches]):
            received = 0
            for routing, _ in self._stream("/trace", {"batches": group, "save_logits": save_logits}):
                if routing.n_sequences != len(group[received]):
                    raise RemoteError(
                        f"the server at {self.url} answered batch {received} with {routing.n_sequences} sequences "
                        f"for {len(group[received])} texts"
                    )
                received += 1
                yield routing
            if received != len(group):
                raise RemoteError(
                    f"the server at {self.url} stopped after {received} of {len(group)} batches without saying why"
                )

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        payload = {
            "prompts": list(prompts),
            "params": {name: getattr(params, name) for name in GenerationParams.__dataclass_fields__},
            "plan": None if plan is None else plan.to_dict(),
        }
        answers = list(self._stream("/generate", payload))
        texts = answers[0][1] if len(answers) == 1 else None
        if texts is None:
            raise RemoteError(f"the server at {self.url} sent no generated text for a generate request")
        return Generations(texts=texts, routing=answers[0][0])

    def _requests(self, batches: list[list[str]]) -> Iterator[list[list[str]]]:
        """Group whole batches into requests within the server's limits of texts and bytes."""
        max_texts = int(self.limits["max_texts"])
        max_bytes = int(self.limits["max_request_bytes"]) * 3 // 4  # room for JSON quoting and escapes
        group: list[list[str]] = []
        texts = size = 0
        for batch in batches:
            batch_size = sum(len(text.encode()) + 8 for text in batch)
            if len(batch) > max_texts or batch_size > max_bytes:
                raise RemoteError(
                    f"one batch of {len(batch)} texts ({batch_size:,} bytes) is more than the server at {self.url} "
                    f"takes in a request ({max_texts} texts, {max_bytes:,} bytes): use a smaller batch size"
                )
            if group and (texts + len(batch) > max_texts or size + batch_size > max_bytes):
                yield group
                group, texts, size = [], 0, 0
            group.append(batch)
            texts += len(batch)
            size += batch_size
        if group:
            yield group
