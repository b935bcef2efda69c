"""Evaluation: how good a model's outputs are (METHODS.md, "Evaluation").

For now this package owns the metrics, pure functions on strings and numbers: chrF++ (FLORES+),
SQuAD exact match and token F1 (XQuAD), the final number of a solution (MGSM, PolyMath), the chosen
option of a multiple-choice answer (Belebele) in `metrics` and `answers`, and whether an output is in
the language it should be in (`language_id`). The task runners, which prompt a backend, score the
outputs and hand the scores to the store, come later.
"""
