"""GPU-only checks: they run where a CUDA device exists and are skipped, saying so, elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.tiny import build_tiny_model
from tests.conftest import PARALLEL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible here"),
]
TEXTS = [text for texts in PARALLEL.values() for text in texts]


def test_cuda_capture_equals_cpu_capture(tiny_model):
    cpu = HFBackend(tiny_model("qwen3_moe")).trace(TEXTS)
    cuda = HFBackend(tiny_model("qwen3_moe"), HFOptions(device="cuda", dtype="float32")).trace(TEXTS)
    assert (cuda.expert_ids == cpu.expert_ids).mean() > 0.99  # different kernels may flip near-ties
    np.testing.assert_allclose(cuda.router_probs, cpu.router_probs, atol=1e-4)


def _host_copies(run) -> int:
    run()  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        run()
    return sum("Memcpy DtoH" in event.name for event in profile.events())


def test_no_device_to_host_copy_per_layer(tmp_path):
    """Capture adds the same number of host copies whatever the depth: none happens per layer."""
    added = {}
    for layers in (2, 6):
        folder = build_tiny_model("qwen3_moe", tmp_path / f"l{layers}", layers=layers)
        backend = HFBackend(folder, HFOptions(device="cuda", dtype="float32"))
        ids, mask = backend._pad(backend._encode(TEXTS[:4]), left=False)

        def plain(backend=backend, ids=ids, mask=mask):
            with torch.inference_mode():
                backend.model(input_ids=ids, attention_mask=mask, use_cache=False)

        added[layers] = _host_copies(lambda backend=backend: backend.trace(TEXTS[:4])) - _host_copies(plain)
    assert added[6] == added[2], added
