-- Routing summaries (docs/methods.md, "Routing summaries"; moe_core.analysis.summaries): what the
-- analyses read instead of every routing decision. The writer adds to them in the transaction of
-- the batches they summarise; `store.upgrades` builds them from `route_codes` for runs stored before.
-- Distributions: soft = router_probs, weight = applied top-k weights normalised per token and
-- averaged over the sequence, hard = activation frequencies / k.

-- Per sequence and MoE layer.
CREATE TABLE sequence_routing (
    run_id      INTEGER NOT NULL,
    seq_id      INTEGER NOT NULL,
    layer       SMALLINT NOT NULL,
    hits        UINTEGER[] NOT NULL,  -- [E] tokens whose top-k holds the expert
    weight      FLOAT[],              -- [E] the weight distribution (NULL: an id-only backend)
    consistency DOUBLE                -- within-sequence consistency, 128 pairs, seed 0 (NULL: < 2 tokens)
);

-- Per language and MoE layer, summed over the run's stored sequences of that language.
CREATE TABLE language_routing (
    run_id            INTEGER NOT NULL,
    lang              VARCHAR NOT NULL,
    layer             SMALLINT NOT NULL,
    n_sequences       INTEGER NOT NULL,
    n_tokens          BIGINT NOT NULL,
    entropy_soft      DOUBLE,            -- sums over sequences of each distribution's entropy (nats);
    entropy_weight    DOUBLE,            -- NULL where the run has no such distribution
    entropy_hard      DOUBLE NOT NULL,
    consistency_sum   DOUBLE NOT NULL,   -- sum of sequence_routing.consistency where not NULL
    consistency_count INTEGER NOT NULL,  -- sequences with a consistency (two tokens or more)
    PRIMARY KEY (run_id, lang, layer)
);

-- Per language, MoE layer and expert, summed over the run's stored sequences of that language.
CREATE TABLE language_expert_routing (
    run_id        INTEGER NOT NULL,
    lang          VARCHAR NOT NULL,
    layer         SMALLINT NOT NULL,
    expert        USMALLINT NOT NULL,
    hits          BIGINT NOT NULL,  -- sum of sequence_routing.hits
    frequency_sum DOUBLE NOT NULL,  -- sum over sequences of hits / n_tokens
    weight_sum    DOUBLE,           -- sum of the weight distributions (NULL: id-only)
    soft_sum      DOUBLE,           -- sum of router_probs (NULL: none stored)
    PRIMARY KEY (run_id, lang, layer, expert)
);

-- Per unordered language pair (lang_a < lang_b), distribution and MoE layer: JS divergence and the
-- entropy-normalised divergence D summed over the items both languages hold.
CREATE TABLE language_pair_divergence (
    run_id         INTEGER NOT NULL,
    source         VARCHAR NOT NULL,  -- soft | weight | hard
    lang_a         VARCHAR NOT NULL,
    lang_b         VARCHAR NOT NULL,
    layer          SMALLINT NOT NULL,
    n_items        INTEGER NOT NULL,
    js_sum         DOUBLE NOT NULL,
    divergence_sum DOUBLE NOT NULL,
    PRIMARY KEY (run_id, source, lang_a, lang_b, layer)
);
