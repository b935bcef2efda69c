"""An adapter on disk, and its merge into the base checkpoint.

An adapter folder holds only what training changed, so it stays small:
  slices.safetensors  the trained expert slices, one tensor per `ExpertSlice.key`, in training dtype
  adapter.json        the base model (path, config hash, a digest of the slices it started from), the
                      slices, and whatever the caller records (target, budget, settings, scores)

`merge_adapter` writes base + slices as a full checkpoint in the base's own dtype, which every
backend loads like any other; every tensor outside the slices is the base's, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from moe_core.adapt.subnetwork import ExpertSlice, apply_slices, slice_values
from moe_core.errors import PolyrouteError

SLICES_FILE = "slices.safetensors"
MANIFEST = "adapter.json"


@dataclass(frozen=True, kw_only=True)
class Adapter:
    folder: Path
    manifest: dict[str, Any]
    slices: list[ExpertSlice]
    values: dict[str, torch.Tensor]  # by ExpertSlice.key


def slices_digest(values: Mapping[str, torch.Tensor]) -> str:
    """A digest of slice values (as float32, so a bf16 base and its float32 upcast agree)."""
    digest = hashlib.sha256()
    for key in sorted(values):
        digest.update(key.encode())
        digest.update(values[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_new_folder(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PolyrouteError(f"{folder} already exists and is not empty: choose another {what} folder")


def save_adapter(
    folder: Path, model: nn.Module, slices: Iterable[ExpertSlice], record: Mapping[str, Any], base_digest: str
) -> Path:
    """Write the trained `slices` of `model` and the manifest into `folder` (created whole, or not at all)."""
    check_new_folder(folder, "adapter")
    pieces = list(slices)
    manifest = {**record, "base_digest": base_digest, "slices": [asdict(piece) for piece in pieces]}
    with _staged(folder) as staging:
        save_file(slice_values(model, pieces), str(staging / SLICES_FILE))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def load_adapter(folder: Path) -> Adapter:
    if not (folder / MANIFEST).is_file() or not (folder / SLICES_FILE).is_file():
        raise PolyrouteError(
            f"{folder} is not an adapter (no {MANIFEST} and {SLICES_FILE}): pass a `polyroute adapt --out` folder"
        )
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    slices = [ExpertSlice(**piece) for piece in manifest["slices"]]
    values = load_file(str(folder / SLICES_FILE))
    missing = [piece.key for piece in slices if piece.key not in values]
    if missing:
        raise PolyrouteError(f"{folder / SLICES_FILE} lacks {', '.join(missing[:3])}: the adapter is damaged")
    return Adapter(folder=folder, manifest=manifest, slices=slices, values=values)


def merge_adapter(adapter_dir: Path, out: Path, base: Path | None = None) -> Path:
    """Write the adapter's base checkpoint with the trained slices in place into `out`."""
    # Loading a model is slow; these imports stay out of the CLI's start-up.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_core.backends.hf import config_hash, load_config

    adapter = load_adapter(adapter_dir)
    check_new_folder(out, "{out}")
    base = base or Path(adapter.manifest["base_model"])
    load_config(base)  # a missing or unreadable base says so first
    if config_hash(base) != adapter.manifest["config_hash"]:
        raise PolyrouteError(
            f"{base} is not the model this adapter was trained on (its config differs): pass {{base}} that checkpoint"
        )
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")  # the stored dtype: the rest stays bit-exact
    if slices_digest(slice_values(model, adapter.slices)) != adapter.manifest["base_digest"]:
        raise PolyrouteError(
            f"the expert weights in {base} differ from those the adapter started from: pass {{base}} that checkpoint"
        )
    apply_slices(model, adapter.slices, adapter.values)
    with _staged(out) as staging:
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(base).save_pretrained(staging)
        shutil.copyfile(adapter_dir / MANIFEST, staging / MANIFEST)  # where the weights came from
    return out


@contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A scratch folder beside `folder` that becomes `folder` when the block succeeds, and is gone if not."""
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if folder.exists():
            folder.rmdir()  # empty: check_new_folder said so
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
