"""Find the steering demo: a prompt and a plan under which the demo model visibly writes otherwise.

Searches the demo model's language experts (`polyroute.plans.language_experts`, each non-Latin
language of the demo run against English) over a few bands, thresholds and strengths, on short
prompts (the first words of held-out English sentences, sampled with a fixed seed, and the words
most languages' sentences share, such as the placeholder %(email)s), and scores
each steered continuation by how much of it is written in the target language's script and how
many of its words that language's corpus really has. Greedy decoding and the fixed sample make
the search reproducible. The best candidates are generated again one prompt at a time, as the
Steering page and `polyroute demo --steer` do, and the best of those wins.

Prints one JSON line per candidate tried and a last line {"winner": ...}: the values of
`polyroute.workflows.steer.DEMO_STEERING`. About 10 s on 2 idle CPU cores (10 minutes when other jobs crowd them).

Run: `python scripts/find_steering_demo.py [--db data/demo.duckdb]` (builds the demo store if absent).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.corpora import BUILTIN, load_corpus
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import PolyrouteError
from moe_core.evaluation.language_id import check_language, dominant_script
from moe_core.evaluation.scripts import letter_scripts
from moe_core.languages import language
from moe_core.steering import SteeringPlan
from polyroute import plans
from polyroute.workflows.common import quiet_libraries
from polyroute.workflows.demo import build_demo_store
from store import open_store

SOURCE = "eng_Latn"
# One language of each non-Latin script the demo corpus has that a bare system's fonts (DejaVu) draw:
# Hangul, Han and kana show as empty boxes in a browser without a CJK font.
TARGETS = ("rus_Cyrl", "ell_Grek", "arb_Arab", "heb_Hebr")
TAUS = (0.2,)
BANDS = ((1, 3),)  # past the first layer, which reads the prompt's script: the widest band that keeps it
STRENGTHS = (2.0, 3.0)
N_PROMPTS = 4
N_OPEN = 8  # prompts every language writes alike
PROMPT_WORDS = (1, 2)  # short prompts: the first words of a sentence leave the language most open
FINALISTS = 8
# Han and kana letters are the target's own letters for the scripts that write with them.
SCRIPT_LETTERS = {"Hans": {"Hani"}, "Hant": {"Hani"}, "Jpan": {"Hani", "Kana"}, "Hang": {"Hang"}}
WORD = re.compile(r"\w{2,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("data/demo.duckdb"), help="the demo store (built if absent)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens per continuation (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="the prompt sample's seed (default 0)")
    args = parser.parse_args()
    quiet_libraries()
    started = time.monotonic()
    run_id = build_demo_store(args.db).run_id
    corpus = load_corpus(BUILTIN)
    texts: dict[str, list[str]] = {}
    for row in corpus.rows:
        texts.setdefault(row.lang, []).append(row.text)
    english = sorted({row.text for row in corpus.rows if row.lang == SOURCE and row.split == "heldout"})
    sampled = random.Random(args.seed).sample(english, N_PROMPTS)
    prompts = list(dict.fromkeys(" ".join(text.split()[:n]) for text in sampled for n in PROMPT_WORDS))
    prompts += language_open(corpus.rows)
    backend = HFBackend(str(DEMO_MODEL_DIR))
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    plain = dict(zip(prompts, backend.generate(prompts, params).texts, strict=True))
    candidates: list[dict[str, Any]] = []
    with open_store(args.db, read_only=True) as store:
        for lang, tau, band in itertools.product(TARGETS, TAUS, BANDS):
            try:
                found = plans.language_experts(store, run_id, lang, ref=SOURCE, tau=tau, layers=band)
            except PolyrouteError as error:
                print(json.dumps({"lang": lang, "tau": tau, "band": band, "skipped": str(error)}), flush=True)
                continue
            for strength in STRENGTHS:
                plan = SteeringPlan.from_dict(found.to_dict() | {"strength": strength})
                steered = backend.generate(prompts, params, plan).texts
                for prompt, text in zip(prompts, steered, strict=True):
                    candidate = scored(lang, tau, band, strength, prompt, plain[prompt], text, texts[lang])
                    candidates.append(candidate)
                    print(json.dumps(candidate, ensure_ascii=False), flush=True)
        finalists = sorted(candidates, key=rank)[:FINALISTS]
        verified = []
        for candidate in finalists:  # one prompt at a time, as the page generates it
            found = plans.language_experts(
                store,
                run_id,
                candidate["lang"],
                ref=SOURCE,
                tau=candidate["tau"],
                layers=tuple(candidate["band"]),
                strength=candidate["strength"],
            )
            prompt = candidate["prompt"]
            before, after = (backend.generate([prompt], params, plan).texts[0] for plan in (None, found))
            verified.append(
                scored(
                    candidate["lang"],
                    candidate["tau"],
                    candidate["band"],
                    candidate["strength"],
                    prompt,
                    before,
                    after,
                    texts[candidate["lang"]],
                )
                | {"experts": {entry.layer: list(entry.experts) for entry in found.steered()}}
            )
    winner = min(verified, key=rank)
    seconds = round(time.monotonic() - started, 1)
    print(json.dumps({"winner": winner, "tried": len(candidates), "seconds": seconds}, ensure_ascii=False))
    return 0


def language_open(rows: Any) -> list[str]:
    """The words most languages' sentences share (placeholders such as %(email)s, URI): prompts that
    leave the language of their continuation open."""
    langs: dict[str, set[str]] = {}
    for row in rows:
        for word in row.text.split():
            langs.setdefault(word, set()).add(row.lang)
    shared = [word for word in langs if any(char.isalpha() for char in word)]
    return sorted(shared, key=lambda word: (-len(langs[word]), word))[:N_OPEN]


def scored(
    lang: str,
    tau: float,
    band: tuple[int, int],
    strength: float,
    prompt: str,
    plain: str,
    steered: str,
    corpus: list[str],
) -> dict[str, Any]:
    """One candidate and its score: the share of the steered text's letters in `lang`'s script, times
    1 + the share of its words in that script that `lang`'s corpus holds, + 0.5 when language ID
    says `lang`; zero unless the plain text is in Latin script."""
    own_letters = SCRIPT_LETTERS.get(language(lang).script, {language(lang).script})
    letters = letter_scripts(steered)
    share = sum(count for name, count in letters.items() if name in own_letters) / max(1, sum(letters.values()))
    # Words in the target's script that its corpus really has (placeholders and Latin words do not count).
    words = [word for word in WORD.findall(steered) if own_letters & set(letter_scripts(word))]
    known = sum(any(word in text for text in corpus) for word in words) / max(1, len(words))
    latin_before = dominant_script(plain) == "Latn"
    check = check_language(steered, lang).matches
    score = share * (1 + known) + (0.5 if check else 0.0) if latin_before else 0.0
    return {
        "lang": lang,
        "tau": tau,
        "band": list(band),
        "strength": strength,
        "prompt": prompt,
        "plain": plain,
        "steered": steered,
        "script_share": round(share, 3),
        "known_words": round(known, 3),
        "language_matches": check,
        "score": round(score, 3),
    }


def rank(candidate: dict[str, Any]) -> tuple[float, float, int]:
    """Best score first; then the gentler push, then the narrower band."""
    first, last = candidate["band"]
    return (-candidate["score"], candidate["strength"], last - first)


if __name__ == "__main__":
    raise SystemExit(main())
