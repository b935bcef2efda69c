-- The core tables of docs/design.md. Large tables carry no index or key: ingest goes through Arrow in
-- (run_id, seq_id, pos, layer, rank) order, so DuckDB's zone maps prune by run and sequence.

CREATE TABLE models (
    model_id         VARCHAR PRIMARY KEY,
    arch             VARCHAR NOT NULL,   -- config.architectures[0]
    family           VARCHAR NOT NULL,   -- the adapter that captured it (generic:<model_type> for others)
    source           VARCHAR NOT NULL,   -- where the checkpoint was loaded from
    n_layers         INTEGER NOT NULL,
    moe_layers       INTEGER[] NOT NULL, -- decoder-layer indices that have a router
    n_experts        INTEGER NOT NULL,   -- routed experts per MoE layer
    top_k            INTEGER NOT NULL,
    n_shared_experts INTEGER NOT NULL,   -- always-on experts, never in routes
    scoring          VARCHAR NOT NULL,   -- the routing rule, e.g. softmax->topk->renorm
    soft_rule        VARCHAR NOT NULL,   -- how router_probs were made: softmax | sigmoid_normalised
    weight_bound     DOUBLE NOT NULL,    -- upper bound of a routing weight (routed scaling factor or 1)
    config_hash      VARCHAR NOT NULL,
    added_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE languages (
    lang           VARCHAR PRIMARY KEY,  -- FLORES-200 code, e.g. ben_Beng
    name           VARCHAR,
    iso639_3       VARCHAR NOT NULL,
    script         VARCHAR NOT NULL,     -- ISO 15924
    family         VARCHAR,
    branch         VARCHAR,
    resource_class TINYINT               -- 0-5, Joshi et al.
);

CREATE TABLE corpora (
    corpus_id    VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,
    format       VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    n_items      INTEGER NOT NULL,
    langs        VARCHAR[] NOT NULL,
    added_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE texts (
    corpus_id  VARCHAR NOT NULL,
    item_id    VARCHAR NOT NULL,  -- same item_id = same meaning across languages
    lang       VARCHAR NOT NULL,
    text       VARCHAR NOT NULL,
    item_index INTEGER NOT NULL,  -- the item's position in the corpus (keeps --limit deterministic)
    PRIMARY KEY (corpus_id, item_id, lang)
);

CREATE SEQUENCE run_ids START 1;

CREATE TABLE runs (
    run_id      INTEGER PRIMARY KEY DEFAULT nextval('run_ids'),
    kind        VARCHAR NOT NULL,      -- trace | generation | evaluation | adaptation
    model_id    VARCHAR NOT NULL,
    corpus_id   VARCHAR,
    backend     VARCHAR NOT NULL,
    plan        JSON,
    params      JSON NOT NULL,
    status      VARCHAR NOT NULL,      -- running | complete | failed
    n_planned   INTEGER NOT NULL,      -- sequences the run will hold when complete
    weight_unit DOUBLE NOT NULL,       -- routes.weight = route_codes.weight_code * weight_unit
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP
);

CREATE TABLE sequences (
    run_id   INTEGER NOT NULL,
    seq_id   INTEGER NOT NULL,
    item_id  VARCHAR NOT NULL,
    lang     VARCHAR NOT NULL,
    n_tokens INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq_id)   -- a sequence is stored exactly once
);

CREATE TABLE tokens (
    run_id    INTEGER NOT NULL,
    seq_id    INTEGER NOT NULL,
    pos       INTEGER NOT NULL,
    token_id  INTEGER NOT NULL,
    piece     VARCHAR NOT NULL,
    special   BOOLEAN NOT NULL,  -- special or chat-template token, not part of the text
    generated BOOLEAN NOT NULL
);

-- One row per routing decision. Weights are 16-bit fixed point (weight_unit = bound / 65535,
-- resolution 1.5e-5 for unscaled routers); NULL for id-only backends. Read them through `routes`.
CREATE TABLE route_codes (
    run_id      INTEGER NOT NULL,
    seq_id      INTEGER NOT NULL,
    pos         INTEGER NOT NULL,
    layer       SMALLINT NOT NULL,  -- the model's own decoder-layer index
    rank        UTINYINT NOT NULL,  -- position in the model's top-k
    expert      USMALLINT NOT NULL,
    weight_code USMALLINT
);

CREATE VIEW routes AS
SELECT c.run_id, c.seq_id, c.pos, c.layer, c.rank, c.expert, CAST(c.weight_code * r.weight_unit AS FLOAT) AS weight
FROM route_codes AS c JOIN runs AS r USING (run_id);

-- Mean post-softmax router probabilities over a sequence's real tokens (docs/methods.md, q_i^(l)).
CREATE TABLE router_probs (
    run_id INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    layer  SMALLINT NOT NULL,
    probs  FLOAT[] NOT NULL  -- n_experts values
);

-- Raw per-token router logits, only for runs traced with --save-logits.
CREATE TABLE router_logits (
    run_id INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    pos    INTEGER NOT NULL,
    layer  SMALLINT NOT NULL,
    logits FLOAT[] NOT NULL  -- n_experts values
);
