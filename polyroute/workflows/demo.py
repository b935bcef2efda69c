"""The demo store: the shipped demo model traced over the held-out sentences of every built-in language.

`polyroute demo` (and `make run`, when the store is absent) builds it, so a new user with no GPU
and no download opens the app on real multilingual routing. The trace stores every token's
experts and each sequence's router probabilities, which is what the analyses read.

The build is idempotent and atomic. A store that already holds a complete demo run of the same
model config and corpus is left alone. Otherwise the run is traced into a temporary copy of the
store beside it (the user's other runs come along) that replaces the store only when the run is
complete; on any failure the copy is deleted, so no half-built store is ever left behind.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from moe_core.backends.options import HFOptions
from moe_core.corpora import BUILTIN, ParallelCorpus, load_corpus
from moe_core.demo import DEMO_MODEL_DIR, DEMO_MODEL_ID
from moe_core.model_identity import config_hash
from polyroute.workflows.trace import ProgressFactory, TraceRequest, start_trace
from store import Store, open_store
from store import queries as q
from store import writer as w

SPLIT = "heldout"  # sentences the demo model never trained on


@dataclass(frozen=True, kw_only=True)
class DemoOutcome:
    """The demo run in `db`; `built` is False when the store already held it."""

    db: Path
    run_id: int
    built: bool
    n_sequences: int
    n_tokens: int
    n_langs: int
    seconds: float


def build_demo_store(db: Path, progress: ProgressFactory | None = None, *, model: Path = DEMO_MODEL_DIR) -> DemoOutcome:
    """Make sure `db` holds a complete demo run of `model`; trace one (atomically) if it does not."""
    started = time.monotonic()
    corpus = load_corpus(BUILTIN, split=SPLIT)
    partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
    try:
        found = _existing_or_copy(db, partial, config_hash(model), corpus) if db.exists() else None
        if found is not None:
            run_id, n_sequences, n_tokens = found.run_id, found.n_stored, found.n_tokens
        else:
            request = TraceRequest(
                db=partial,
                model=model,
                corpus=BUILTIN,
                langs=corpus.langs,
                split=SPLIT,
                options=HFOptions(model_id=DEMO_MODEL_ID),
            )
            traced = start_trace(request, progress)
            _fold_journal(partial)  # only the file moves onto `db`: it must hold everything
            partial.replace(db)
            run_id, n_sequences, n_tokens = traced.run_id, traced.n_sequences, traced.n_tokens
    finally:
        _remove(partial)
    return DemoOutcome(
        db=db,
        run_id=run_id,
        built=found is None,
        n_sequences=n_sequences,
        n_tokens=n_tokens,
        n_langs=len(corpus.langs),
        seconds=time.monotonic() - started,
    )


def _existing_or_copy(db: Path, partial: Path, model_hash: str, corpus: ParallelCorpus) -> q.RunRow | None:
    """The store's complete demo run if it has one; else copy the store to `partial` and return None."""
    _fold_journal(db)  # so the file alone, which is what we copy, is the whole store
    # Open read-only while copying: DuckDB's lock keeps writers out, so the copy is consistent.
    with open_store(db, read_only=True) as store:
        found = _demo_run(store, model_hash, corpus)
        if found is None:
            shutil.copyfile(db, partial)
        return found


def _demo_run(store: Store, model_hash: str, corpus: ParallelCorpus) -> q.RunRow | None:
    """A complete trace of the demo model (this config) over this corpus and every one of its languages."""
    for run in q.list_runs(store):
        if (
            run.kind == "trace"
            and run.status == "complete"
            and run.n_stored == run.n_planned
            and run.model_id.split("@")[0] == DEMO_MODEL_ID  # `name@hash`: the store renamed a second config
            and run.corpus_id == corpus.corpus_id
            and run.params.get("langs") == corpus.langs
            and q.model_config_hash(store, run.model_id) == model_hash
        ):
            return run
    return None


def _fold_journal(db: Path) -> None:
    """Write a store's pending journal (`.wal`, left by a writer that did not close cleanly) into its file."""
    if _journal(db).exists():
        with open_store(db) as store:
            w.checkpoint(store)


def _journal(db: Path) -> Path:
    return db.with_name(f"{db.name}.wal")


def _remove(partial: Path) -> None:
    for path in (partial, _journal(partial)):
        with suppress(FileNotFoundError):
            path.unlink()
