"""What every whole job needs: its backends (a local checkpoint or `polyroute serve` servers), the
corpus and language rows it records before its run, how it marks a run that stopped early, and
quiet model libraries.

The trace, evaluation and adaptation jobs (and the CLI's `serve` and `steer`, the Steering page)
take their backends from here, so none of them imports another job for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from moe_core.backends.base import Backend
from moe_core.backends.options import HFOptions
from moe_core.corpora import ParallelCorpus
from moe_core.errors import Cancelled, PolyrouteError
from moe_core.languages import languages
from store import Store, StoreError
from store import writer as w


def mark_stopped(store: Store, run_id: int, error: BaseException) -> None:
    """Mark run `run_id`, which stopped early on `error`, `cancelled` (the user stopped it) or
    `failed`; what it stored stays, and a trace run resumes from there either way."""
    # The original error is what the user needs; a store too broken to take the status adds nothing.
    with suppress(StoreError):
        w.set_run_status(store, run_id, "cancelled" if isinstance(error, Cancelled) else "failed")


def connect(
    model: Path | Backend | None, options: HFOptions, servers: Sequence[str] = (), token: str | None = None
) -> list[Backend]:
    """The backends a job runs on: `polyroute serve` processes (all running the same model), else
    the local model folder (or a backend the caller already holds)."""
    if servers and model is not None:
        raise PolyrouteError("give {model} or {backend} URL, not both: a server runs the model it was started with")
    if not servers:
        if model is None:
            raise PolyrouteError("no model: pass {model} DIR, or {backend} URL of a `polyroute serve`")
        return [model if isinstance(model, Backend) else hf_backend(model, options)]
    from moe_core.backends.remote import RemoteBackend

    backends: list[Backend] = [RemoteBackend(url, token=token) for url in servers]
    models = {backend.info().config_hash: backend.info().model_id for backend in backends}
    if len(models) > 1:
        raise PolyrouteError(
            f"the servers run different models ({', '.join(models.values())}): shard a run only over servers "
            "started with the same {model}"
        )
    return backends


def hf_backend(model: str | Path, options: HFOptions) -> Backend:
    """The transformers backend for a checkpoint folder (the trace and evaluation jobs' default)."""
    # torch and transformers load only when a model runs: the app's pages import this module.
    from moe_core.backends.hf import HFBackend

    return HFBackend(model, options)


def record_corpus(store: Store, corpus: ParallelCorpus) -> None:
    """Store the corpus (once) and the metadata of every FLORES-200 language (refreshed)."""
    w.ensure_languages(
        store,
        [{column: getattr(lang, column) for column in w.LANGUAGE_COLUMNS} for lang in languages().values()],
    )
    w.ensure_corpus(
        store,
        w.CorpusRecord(
            corpus_id=corpus.corpus_id,
            name=corpus.name,
            source=corpus.source,
            format=corpus.format,
            content_hash=corpus.content_hash,
            template=corpus.template,
            meta=corpus.meta,
            rows=[(row.item_id, row.lang, row.text, row.split, row.fields) for row in corpus.rows],
        ),
    )


def quiet_libraries() -> None:
    """transformers' and the Hub's loading bars and notices would bury ours."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
