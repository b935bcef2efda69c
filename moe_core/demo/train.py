"""Train the demo model on the train split of the built-in corpus: `python -m moe_core.demo.train`.

A byte-level BPE (trained on the train texts only) and a small Qwen3-MoE learn next-token
prediction on all 34 languages at once. Training stops on held-out loss (the `heldout` split, every
language), not on an epoch count: after each epoch the held-out loss is measured, and when it has
not improved for `patience` epochs the best weights so far are kept. A wall-clock budget is a
safety net on slow machines. Seed, batch order and thread count are fixed, so a rerun on the same
machine gives the same numbers; `training.json` records them with the loss curve and the corpus
hash so anyone can compare.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from moe_core.corpora import BUILTIN, load_corpus
from moe_core.demo import DEMO_MODEL_DIR, TRAINING_RECORD
from moe_core.demo.lm import builtin_texts, encode, heldout_loss, pad, token_loss
from moe_core.tiny import tiny_config, train_tokenizer

VERSIONED = ("torch", "transformers", "tokenizers", "Django", "django-allauth")
SAVE_RESERVE_S = 45.0  # kept free at the end of the budget for the last evaluations and the save


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Model size and optimisation settings; every value is recorded in training.json."""

    seed: int = 0
    vocab_size: int = 2048
    layers: int = 4
    hidden: int = 128
    heads: int = 4
    head_dim: int = 32
    experts: int = 8
    top_k: int = 2
    moe_intermediate: int = 128
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    aux_loss_coef: float = 0.01  # load balancing, so the router cannot collapse onto a few experts
    max_epochs: int = 40
    patience: int = 1  # the held-out curve is smooth (a full pass per point): one worse epoch means overfitting
    max_minutes: float = 10.0


@dataclass(frozen=True, kw_only=True)
class Epoch:
    """One point of the loss curve (epoch 0: before training)."""

    epoch: int
    steps: int
    train_loss: float | None
    heldout_loss: float
    seconds: float


def build_model(config: TrainConfig, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised Qwen3-MoE of `config`'s size (torch's seed decides the weights)."""
    model_config = tiny_config(
        "qwen3_moe",
        vocab_size=vocab_size,
        layers=config.layers,
        hidden=config.hidden,
        experts=config.experts,
        top_k=config.top_k,
        moe_intermediate_size=config.moe_intermediate,
        head_dim=config.head_dim,
        num_attention_heads=config.heads,
    )
    model: PreTrainedModel = AutoModelForCausalLM.from_config(model_config)
    return model


def epoch_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """A seeded shuffle, sorted by length within pools of 32 batches (little padding), batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        ranked = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
    for index in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[index]


class Trainer:
    """The training loop: epochs until held-out loss stops improving or the time budget is spent."""

    def __init__(
        self, config: TrainConfig, tokenizer: Any, train_texts: Sequence[str], heldout: Sequence[str], started: float
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.rows = encode(tokenizer, train_texts)
        self.heldout = heldout
        torch.manual_seed(config.seed)
        self.model = build_model(config, len(tokenizer))
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps)
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.started = started
        self.deadline = self.started + config.max_minutes * 60 - SAVE_RESERVE_S
        self.steps = 0
        self.curve: list[Epoch] = []
        self.stopped = "max_epochs"

    def run(self) -> tuple[dict[str, torch.Tensor], Epoch]:
        """Train; return the best weights (by held-out loss) and their point of the curve."""
        best = self._record(0, None)
        best_state = self._state()
        for epoch in range(1, self.config.max_epochs + 1):
            train_loss = self._epoch(epoch)
            point = self._record(epoch, train_loss)
            if point.heldout_loss < best.heldout_loss:
                best, best_state = point, self._state()
            if time.monotonic() > self.deadline:
                self.stopped = "time_budget"
                break
            if epoch - best.epoch >= self.config.patience:
                self.stopped = "heldout_loss"
                break
        return best_state, best

    def _epoch(self, epoch: int) -> float:
        self.model.train()
        lengths = [len(row) for row in self.rows]
        total, count = 0.0, 0
        batches = list(epoch_batches(lengths, self.config.batch_size, self.generator))
        with tqdm(batches, desc=f"epoch {epoch}", unit="batch", file=sys.stderr, dynamic_ncols=True) as bar:
            for batch in bar:
                loss, n = self._step([self.rows[i] for i in batch])
                total, count = total + loss, count + n
                bar.set_postfix(loss=f"{total / count:.3f}")
                if time.monotonic() > self.deadline:
                    break  # the budget is spent: evaluate what we have
        return total / count

    def _step(self, rows: Sequence[Sequence[int]]) -> tuple[float, int]:
        ids, mask = pad(rows, self.tokenizer.pad_token_id)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False, output_router_logits=True)
        summed, n = token_loss(out.logits, ids, mask)
        loss = summed / n + self.config.aux_loss_coef * out.aux_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        return float(summed), n

    def _record(self, epoch: int, train_loss: float | None) -> Epoch:
        loss = heldout_loss(self.model, self.tokenizer, self.heldout)
        point = Epoch(
            epoch=epoch,
            steps=self.steps,
            train_loss=train_loss,
            heldout_loss=loss,
            seconds=round(time.monotonic() - self.started, 1),
        )
        self.curve.append(point)
        shown = "" if train_loss is None else f"train {train_loss:.4f}, "
        print(f"epoch {epoch}: {shown}held-out {loss:.4f} ({point.seconds:.0f} s)", file=sys.stderr)
        return point

    def _state(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}


def train(config: TrainConfig, out: Path) -> dict[str, Any]:
    """Train, save the best weights in bf16 with the tokenizer into `out`, and return the record."""
    started = time.monotonic()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    train_texts, heldout = builtin_texts("train"), builtin_texts("heldout")
    tokenizer = train_tokenizer(train_texts, config.vocab_size)
    trainer = Trainer(config, tokenizer, train_texts, heldout, started)
    best_state, best = trainer.run()
    trainer.model.load_state_dict(best_state)
    staging = out.with_name(f"{out.name}.partial")  # `out` is replaced only by a complete checkpoint
    shutil.rmtree(staging, ignore_errors=True)
    saved = _save_bf16(trainer.model, tokenizer, staging)
    record = {
        "model": f"Qwen3-MoE, {sum(p.numel() for p in saved.parameters()):,} parameters, saved in bfloat16",
        "heldout_loss": heldout_loss(saved, tokenizer, heldout),  # of the saved bf16 weights, as shipped
        "heldout_loss_float32": best.heldout_loss,  # the same weights before the cast
        "best_epoch": best.epoch,
        **_run_record(trainer, config, time.monotonic() - started),
    }
    (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return record


def _save_bf16(model: PreTrainedModel, tokenizer: Any, folder: Path) -> PreTrainedModel:
    """Save `model` in bfloat16 with its tokenizer, and load it back in float32, as its users will."""
    # transformers wraps `to` in a decorator that mypy reads as taking the model itself.
    model.to(torch.bfloat16).save_pretrained(folder)  # type: ignore[arg-type]
    tokenizer.save_pretrained(folder)
    saved: PreTrainedModel = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return saved


def _run_record(trainer: Trainer, config: TrainConfig, seconds: float) -> dict[str, Any]:
    """How the training went and what it ran on, for whoever retrains and compares."""
    return {
        "epochs": trainer.curve[-1].epoch,
        "steps": trainer.steps,
        "stopped_by": trainer.stopped,
        "seed": config.seed,
        "wall_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "corpus": _corpus_record(len(trainer.rows), len(trainer.heldout), sum(len(row) for row in trainer.rows)),
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(trainer.tokenizer), "trained_on": "train split"},
        "hyperparameters": asdict(config),
        "versions": {name: importlib.metadata.version(name) for name in VERSIONED},
        "curve": [asdict(point) for point in trainer.curve],
    }


def _corpus_record(n_train: int, n_heldout: int, train_tokens: int) -> dict[str, Any]:
    corpus = load_corpus(BUILTIN)
    return {
        "name": BUILTIN,
        "corpus_id": corpus.corpus_id,
        "content_hash": corpus.content_hash,
        "splits": {split: load_corpus(BUILTIN, split=split).corpus_id for split in ("train", "heldout")},
        "packages": corpus.meta["packages"],
        "languages": len(corpus.langs),
        "train_texts": n_train,
        "heldout_texts": n_heldout,
        "train_tokens_per_epoch": train_tokens,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_core.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEMO_MODEL_DIR, help=f"checkpoint folder (default {DEMO_MODEL_DIR})"
    )
    parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of weights and batch order")
    parser.add_argument("--max-minutes", type=float, default=TrainConfig.max_minutes, help="wall-clock budget")
    args = parser.parse_args(argv)
    if not math.isfinite(args.max_minutes) or args.max_minutes <= 1:
        parser.error("--max-minutes must be more than 1")
    record = train(TrainConfig(seed=args.seed, max_minutes=args.max_minutes), args.out)
    curve = record["curve"]
    print(
        f"saved {args.out}: held-out loss {curve[0]['heldout_loss']:.3f} -> {record['heldout_loss']:.4f} "
        f"(bf16) after {record['epochs']} epochs, {record['steps']} steps, {record['wall_seconds']:.0f} s; "
        f"stopped by {record['stopped_by']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
