-- Adaptation runs (runs.kind = 'adaptation', docs/methods.md "RISE"): the experts a run trained, with the
-- zone and the scores that selected them from a trace run (runs.params.trace_run). Each language's
-- held-out loss before and after training goes to eval_results: task 'causal_lm', variants
-- 'before' and 'after', metrics 'loss' (nats per token) and 'perplexity', n = tokens predicted.

CREATE TABLE adaptation_experts (
    run_id      INTEGER NOT NULL,
    rank        INTEGER NOT NULL,   -- selection order: zone by zone (shallow, middle, deep), best score first
    zone        VARCHAR NOT NULL,   -- shallow | middle | deep (depth fraction < 37.5%, < 62.5%, the rest)
    layer       SMALLINT NOT NULL,  -- the model's own decoder-layer index
    expert      USMALLINT NOT NULL,
    score       DOUBLE NOT NULL,    -- what ranked it: Spec (shallow, deep) or Ovlp (middle)
    specificity DOUBLE NOT NULL,    -- S = a_target / mean a over the run's languages
    overlap     DOUBLE NOT NULL,    -- O = 1 / (1 + CV)
    target_freq DOUBLE NOT NULL,    -- a_target: share of the target's tokens whose top-k holds it
    mean_freq   DOUBLE NOT NULL,    -- mean a over the run's languages
    PRIMARY KEY (run_id, layer, expert)
);
