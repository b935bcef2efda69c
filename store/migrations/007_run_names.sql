-- A name and a note per run, set by the user (`polyroute runs rename` / `note`, the Overview page);
-- NULL until then. The run id stays the run's key: names need not be unique.
ALTER TABLE runs ADD COLUMN name VARCHAR;
ALTER TABLE runs ADD COLUMN note VARCHAR;
