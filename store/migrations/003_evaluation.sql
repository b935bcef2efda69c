-- Evaluation runs (runs.kind = 'evaluation'): every generated answer, and every score per task,
-- language, variant (unsteered, a plan, a sweep point) and metric.

CREATE TABLE generations (
    run_id   INTEGER NOT NULL,
    variant  VARCHAR NOT NULL,   -- unsteered | plan | strength=0.5 | window=middle ...
    item_id  VARCHAR NOT NULL,
    lang     VARCHAR NOT NULL,
    prompt   VARCHAR NOT NULL,   -- what the model read
    output   VARCHAR NOT NULL,   -- what it wrote
    PRIMARY KEY (run_id, variant, item_id, lang)
);

CREATE TABLE eval_results (
    run_id   INTEGER NOT NULL,
    task     VARCHAR NOT NULL,   -- belebele | mgsm | flores | xquad | polymath
    lang     VARCHAR NOT NULL,
    variant  VARCHAR NOT NULL,
    metric   VARCHAR NOT NULL,   -- accuracy | chrf++ | language_consistency | exact_match | f1
    value    DOUBLE NOT NULL,
    n        INTEGER NOT NULL,   -- items scored
    plan     JSON,               -- the steering plan of this variant (NULL: unsteered)
    PRIMARY KEY (run_id, task, lang, variant, metric)
);
