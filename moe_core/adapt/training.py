"""Training a selected expert subnetwork with the causal-LM loss on target-language text, and the
held-out loss per language that judges it (docs/methods.md, "RISE").

Texts are fed as the demo model was trained (`moe_core.demo.lm`: `<s> text </s>`, the loss summed in
float32 over real tokens), so the numbers compare with its `training.json`. Seeded: the same
settings on the same machine give the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from moe_core.adapt.settings import AdaptProgress, LanguageLoss, ProgressCallback, TrainingLog, TrainSettings
from moe_core.adapt.subnetwork import ExpertSlice, SubnetworkMask
from moe_core.demo.lm import encode, length_batches, pad, token_loss
from moe_core.errors import PolyrouteError


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batch(tokenizer: Any, rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # The loss skips padding by the mask, so any id pads a tokenizer without a pad token.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = pad(rows, pad_id)
    return ids.to(device), mask.to(device)


def language_losses(
    model: nn.Module,
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    *,
    stage: str = "before",
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> list[LanguageLoss]:
    """Mean token loss of `model` on each language's texts, in the order of `texts`."""
    encoded = {lang: encode(tokenizer, rows) for lang, rows in texts.items()}
    plans = {lang: list(length_batches([len(r) for r in rows], batch_size)) for lang, rows in encoded.items()}
    total, done = sum(len(batches) for batches in plans.values()), 0
    device, results = _device(model), []
    model.eval()
    with torch.inference_mode():
        for lang, rows in encoded.items():
            summed, count = 0.0, 0
            for batch in plans[lang]:
                ids, mask = _batch(tokenizer, [rows[i] for i in batch], device)
                loss, n = token_loss(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids, mask)
                summed, count, done = summed + float(loss), count + n, done + 1
                if progress:
                    progress(AdaptProgress(stage=stage, done=done, total=total))
            if not count:
                raise PolyrouteError(f"the evaluation texts of {lang} have no token to predict")
            results.append(LanguageLoss(lang=lang, loss=summed / count, n_tokens=count))
    return results


def train_subnetwork(
    model: nn.Module,
    tokenizer: Any,
    slices: Sequence[ExpertSlice],
    texts: Sequence[str],
    settings: TrainSettings,
    progress: ProgressCallback | None = None,
) -> TrainingLog:
    """Train only `slices` of `model` (in place) on `texts` with AdamW and the causal-LM loss."""
    settings.check()
    if not texts:
        raise PolyrouteError("there is no training text for the target language: choose another {train_corpus}")
    started = time.monotonic()
    mask = SubnetworkMask(model, slices)
    optimizer = torch.optim.AdamW(mask.trainable(), lr=settings.lr, weight_decay=0.0)  # decay: mask.decay
    rows = encode(tokenizer, texts)
    per_epoch = math.ceil(len(rows) / settings.batch_size)
    total = min(per_epoch * settings.epochs, settings.max_steps or per_epoch * settings.epochs)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    device = _device(model)
    losses: list[float] = []
    # Evaluation mode while training: the experts learn under the routing the model uses at
    # inference (no router jitter, no dropout); only the selected weights can change anyway.
    model.eval()
    try:
        while len(losses) < total:
            order = torch.randperm(len(rows), generator=generator).tolist()
            for start in range(0, len(order), settings.batch_size):
                if len(losses) == total:
                    break
                ids, attention = _batch(
                    tokenizer, [rows[i] for i in order[start : start + settings.batch_size]], device
                )
                summed, n = token_loss(
                    model(input_ids=ids, attention_mask=attention, use_cache=False).logits, ids, attention
                )
                loss = summed / n
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                mask.mask_gradients()
                torch.nn.utils.clip_grad_norm_(mask.trainable(), settings.max_grad_norm)
                mask.decay(1 - settings.lr * settings.weight_decay)
                optimizer.step()
                losses.append(float(loss.detach()))
                if progress:
                    progress(AdaptProgress(stage="training", done=len(losses), total=total, loss=losses[-1]))
    finally:
        mask.release()
    return TrainingLog(
        steps=len(losses),
        n_texts=len(rows),
        first_loss=losses[0],
        last_loss=losses[-1],
        seconds=time.monotonic() - started,
    )
