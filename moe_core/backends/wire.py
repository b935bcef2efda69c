"""How routing travels between `polyroute serve` and the remote backend: Arrow IPC streams.

A `RoutingBatch` becomes one Arrow record batch with one row per sequence and each token's arrays
as list columns (`expert_ids` is list<fixed_size_list<int16>[L*k]>), so a batch converts with no
per-token Python work and decodes into exactly the arrays that were sent. The MoE layers ride in
the schema's metadata. A stream that ends in trouble ends with an empty batch whose custom
metadata holds the server's error message; a stream cut short (the server died) fails to decode.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from moe_core.records import ModelInfo, RoutingBatch

PROTOCOL = 1  # bumped whenever the wire format changes: client and server must agree
ERROR_KEY = b"error"
MEDIA_TYPE = "application/vnd.apache.arrow.stream"


class WireError(Exception):
    """A stream that does not decode, or one the server ended with an error (`server_message`)."""

    def __init__(self, message: str, *, server_message: str | None = None) -> None:
        super().__init__(message)
        self.server_message = server_message


def info_to_dict(info: ModelInfo) -> dict[str, Any]:
    return asdict(info)


def info_from_dict(data: dict[str, Any]) -> ModelInfo:
    return ModelInfo(**{**data, "moe_layers": tuple(data["moe_layers"])})


def _per_token(values: np.ndarray, offsets: np.ndarray, width: int) -> pa.Array:
    """[N, a, b] values -> one list per sequence of fixed-size lists of a*b values."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.FixedSizeListArray.from_arrays(flat, width))


def encode(batch: RoutingBatch, texts: list[str] | None = None) -> pa.RecordBatch:
    """One row per sequence; `texts` (generated continuations) adds a `text` column."""
    offsets = batch.offsets
    n_layers, top_k = batch.expert_ids.shape[1:]
    lists = pa.array(offsets, pa.int32())
    columns: dict[str, pa.Array] = {
        "token_ids": pa.ListArray.from_arrays(lists, pa.array(batch.token_ids.astype(np.int64))),
        "pieces": pa.ListArray.from_arrays(lists, pa.array(batch.pieces, pa.string())),
        "special": pa.ListArray.from_arrays(lists, pa.array(batch.special)),
        "generated": pa.ListArray.from_arrays(lists, pa.array(batch.generated)),
        "expert_ids": _per_token(batch.expert_ids.astype(np.int16), offsets, n_layers * top_k),
    }
    if batch.expert_weights is not None:
        columns["expert_weights"] = _per_token(batch.expert_weights.astype(np.float32), offsets, n_layers * top_k)
    if batch.router_probs is not None:
        probs = batch.router_probs.astype(np.float32)
        columns["router_probs"] = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs[0].size)
    if batch.router_logits is not None:
        logits = batch.router_logits.astype(np.float32)
        columns["router_logits"] = _per_token(logits, offsets, n_layers * logits.shape[2])
    if texts is not None:
        columns["text"] = pa.array(texts, pa.string())
    meta = {"layers": json.dumps(batch.layers.tolist()), "top_k": str(top_k)}
    return pa.RecordBatch.from_pydict(columns, metadata=meta)


def _values(column: pa.Array) -> np.ndarray:
    """The flat values of a (list of) fixed-size list column, whatever offset the column starts at."""
    if pa.types.is_list(column.type):
        column = column.flatten()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False))


def decode(record: pa.RecordBatch) -> tuple[RoutingBatch, list[str] | None]:
    """The inverse of `encode`: the routing batch and the continuations when the row carries them."""
    meta = record.schema.metadata or {}
    layers = np.asarray(json.loads(meta[b"layers"]), dtype=np.int16)
    top_k = int(meta[b"top_k"])
    n_layers = len(layers)
    token_lists = record.column("token_ids")
    seq_lengths = np.diff(np.asarray(token_lists.offsets.to_numpy(), dtype=np.int64))
    n = int(seq_lengths.sum())
    names = set(record.schema.names)

    def per_token(name: str, dtype: Any) -> np.ndarray | None:
        if name not in names:
            return None
        return _values(record.column(name)).astype(dtype).reshape(n, n_layers, -1)

    probs = None
    if "router_probs" in names:
        probs = _values(record.column("router_probs")).astype(np.float32).reshape(len(seq_lengths), n_layers, -1)
    routing = RoutingBatch(
        layers=layers,
        seq_lengths=seq_lengths,
        token_ids=np.asarray(token_lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int64),
        pieces=record.column("pieces").flatten().to_pylist(),
        special=np.asarray(record.column("special").flatten().to_numpy(zero_copy_only=False), dtype=bool),
        generated=np.asarray(record.column("generated").flatten().to_numpy(zero_copy_only=False), dtype=bool),
        expert_ids=_values(record.column("expert_ids")).astype(np.int16).reshape(n, n_layers, top_k),
        expert_weights=per_token("expert_weights", np.float32),
        router_probs=probs,
        router_logits=per_token("router_logits", np.float32),
    )
    texts = record.column("text").to_pylist() if "text" in names else None
    return routing, texts


class StreamEncoder:
    """Writes record batches into Arrow IPC bytes, one chunk per batch, ready to send as they come."""

    def __init__(self) -> None:
        self._sink = io.BytesIO()
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema = pa.schema([])

    def _take(self) -> bytes:
        chunk = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return chunk

    def batch(self, record: pa.RecordBatch) -> bytes:
        if self._writer is None:
            self._schema = record.schema
            self._writer = pa.ipc.new_stream(self._sink, record.schema)
        self._writer.write_batch(record)
        return self._take()

    def finish(self, *, error: str | None = None) -> bytes:
        """The end of the stream; with `error`, an empty batch that carries the message first."""
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
        if error is not None:
            empty = pa.RecordBatch.from_pylist([], schema=self._schema)
            self._writer.write_batch(empty, custom_metadata={ERROR_KEY: error.encode()})
        self._writer.close()
        return self._take()


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (an HTTP response body)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def read_stream(chunks: Iterable[bytes]) -> Iterator[tuple[RoutingBatch, list[str] | None]]:
    """Decode batches as their bytes arrive; raise `WireError` for a broken stream or a server error."""
    try:
        reader = pa.ipc.open_stream(io.BufferedReader(_ChunkReader(chunks), buffer_size=1 << 16))
        while True:
            try:
                record, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            if custom is not None and ERROR_KEY in custom:
                message = custom[ERROR_KEY].decode()
                raise WireError(message, server_message=message)
            yield decode(record)
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as error:
        raise WireError(f"the routing stream broke off or is damaged ({type(error).__name__}: {error})") from error
