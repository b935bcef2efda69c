"""Parallel corpora: aligned texts (`item_id`, `lang`, `text`), read from files or built in."""

from moe_core.corpora.base import ParallelCorpus, TextRow
from moe_core.corpora.files import read_corpus

__all__ = ["ParallelCorpus", "TextRow", "read_corpus"]
