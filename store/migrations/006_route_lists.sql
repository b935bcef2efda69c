-- Routing decisions packed per sequence and MoE layer: one row holds the layer's top-k experts and
-- weight codes of every token of the sequence, in (pos, rank) order. Measured on a 500M-decision
-- store (bench/scale.py): 2.9 bytes per decision against 4.2 for a row per decision, and a tenth of
-- the rows to insert. `routes` keeps its columns and meaning as a view that unpacks the lists.
-- The data step (`store.upgrades.pack_routes`) moves the rows of `route_codes` here, a few hundred
-- sequences at a time, then drops it.
CREATE TABLE route_lists (
    run_id       INTEGER NOT NULL,
    seq_id       INTEGER NOT NULL,
    layer        SMALLINT NOT NULL,    -- the model's own decoder-layer index
    experts      USMALLINT[] NOT NULL, -- [n_tokens * top_k]: token pos // top_k, rank pos % top_k
    weight_codes USMALLINT[]           -- the same order; weight = code * runs.weight_unit (NULL: id-only)
);

CREATE OR REPLACE VIEW routes AS
SELECT u.run_id, u.seq_id, CAST((u.i - 1) // m.top_k AS INTEGER) AS pos, u.layer,
       CAST((u.i - 1) % m.top_k AS UTINYINT) AS rank, u.expert, CAST(u.code * r.weight_unit AS FLOAT) AS weight
FROM (
    SELECT run_id, seq_id, layer, generate_subscripts(experts, 1) AS i, unnest(experts) AS expert,
           unnest(weight_codes) AS code
    FROM route_lists
) AS u
JOIN runs AS r USING (run_id)
JOIN models AS m ON m.model_id = r.model_id;
