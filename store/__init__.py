"""The DuckDB store: schema migrations, the bulk writer, typed queries and the read-only SQL console.

All SQL of Polyroute lives in this package. It never imports torch, transformers, vLLM or
Streamlit; it reads the engine's numpy records (`moe_core.records`) and nothing else of it.
"""

from store.connection import Store, open_store
from store.errors import SqlRefused, StoreCorrupt, StoreError, StoreLocked, StoreMissing
from store.shared import SharedStore

__all__ = [
    "SharedStore",
    "SqlRefused",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreMissing",
    "open_store",
]
