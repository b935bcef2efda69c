"""Shared fixtures: tiny random MoE models of every family, parallel corpus files, stores."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from moe_core.tiny import FAMILY_CONFIGS, build_tiny_model

FAMILIES = list(FAMILY_CONFIGS)

PARALLEL = {
    "eng_Latn": [
        "The weather is lovely today.",
        "The children are playing in the park with their friends.",
        "Please enter a valid email address.",
        "Your password must contain at least eight characters.",
        "This field is required.",
        "We sent you a message to confirm your account.",
    ],
    "deu_Latn": [
        "Das Wetter ist heute schön.",
        "Die Kinder spielen mit ihren Freunden im Park.",
        "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "Ihr Passwort muss mindestens acht Zeichen enthalten.",
        "Dieses Feld ist erforderlich.",
        "Wir haben Ihnen eine Nachricht zur Bestätigung Ihres Kontos gesendet.",
    ],
    "rus_Cyrl": [
        "Сегодня прекрасная погода.",
        "Дети играют в парке со своими друзьями.",
        "Пожалуйста, введите правильный адрес электронной почты.",
        "Ваш пароль должен содержать не менее восьми символов.",
        "Это поле обязательно.",
        "Мы отправили вам сообщение для подтверждения вашей учётной записи.",
    ],
}


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_root: Path):
    """`tiny_model(family)` -> folder of a random tiny model of that family (built once per session)."""

    def build(family: str) -> Path:
        folder = model_root / family
        if not (folder / "config.json").exists():
            build_tiny_model(family, folder)
        return folder

    return build


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    rows = [
        {"item_id": f"item{i}", "lang": lang, "text": text}
        for lang, texts in PARALLEL.items()
        for i, text in enumerate(texts)
    ]
    return write_jsonl(tmp_path / "parallel.jsonl", rows)
