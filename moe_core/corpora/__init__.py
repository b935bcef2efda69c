"""Parallel corpora: aligned texts (`item_id`, `lang`, `text`), built in, from benchmarks, or from files.

One naming scheme everywhere (`--corpus` on the CLI, the app's Collect page):
- `builtin`: sentences from the translation catalogs of the installed Django and django-allauth;
- `NAME:PATH`: a benchmark (`flores_plus`, `belebele`, `mgsm`, `xquad`, `polymath`) from a local copy;
- `NAME`: that benchmark from the Hugging Face Hub, where a network exists;
- `FILE.jsonl` (or .json, .csv, .tsv, .parquet): your own rows of item_id, lang, text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from moe_core.corpora.base import ParallelCorpus, TextRow
from moe_core.corpora.benchmarks import BENCHMARKS, Benchmark
from moe_core.corpora.builtin import builtin_corpus
from moe_core.corpora.files import read_corpus
from moe_core.errors import CorpusError

BUILTIN = "builtin"

__all__ = ["BENCHMARKS", "BUILTIN", "Benchmark", "ParallelCorpus", "TextRow", "load_corpus", "read_corpus"]


def load_corpus(spec: str | Path, langs: Sequence[str] | None = None, split: str | None = None) -> ParallelCorpus:
    """The corpus `spec` names. `langs` narrows what a benchmark reads (the Hub needs it); `split` picks one."""
    spec = str(spec)
    name, sep, path = spec.partition(":")
    if spec == BUILTIN:
        return builtin_corpus(split)
    if name in BENCHMARKS:
        return BENCHMARKS[name].read(Path(path) if sep else None, langs, split)
    if split is not None:
        raise CorpusError(f"{{split}} applies to the built-in corpus and benchmarks, not to the file {spec}")
    return read_corpus(spec)
