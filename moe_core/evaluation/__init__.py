"""Evaluation: how good a model's outputs are (docs/methods.md, "Evaluation").

- `metrics`, `answers`, `language_id`: pure functions on strings and numbers: chrF++ (FLORES+),
  SQuAD exact match and token F1 (XQuAD), the final number of a solution (MGSM, PolyMath), the
  chosen option of a multiple-choice answer (Belebele), and whether an output is in the language
  it should be in.
- `tasks`: one spec per task (the fields it needs, its prompt, its scorer); `sweeps`: the variants
  a plan and `--sweep` give; `runner.evaluate`: generate with a backend and score, never touching
  the store (polyroute/workflows/evaluate.py stores the result).
"""
