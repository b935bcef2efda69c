"""Backends: where the model runs (`hf` in process, `remote` on a GPU server, `vllm`).

`import_model_libraries` imports torch, transformers and the `hf` backend one thread at a time: the
app imports them in threads (its background import, its jobs, its Steering page), and
transformers' modules import each other in cycles, so two threads importing them at once can each
be handed the other's half-initialised module ("cannot import name 'AutoConfig' from
'transformers'", seen when the background import met an adaptation job's).
"""

from __future__ import annotations

import threading
from importlib import import_module

MODEL_LIBRARIES = "moe_core.backends.hf"  # torch and transformers: several seconds to import
_importing = threading.Lock()


def import_model_libraries() -> None:
    """Import the `hf` backend (torch, transformers) unless it is; other threads wait for it."""
    with _importing:
        import_module(MODEL_LIBRARIES)
