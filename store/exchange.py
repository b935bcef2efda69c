"""Runs that travel: a run exported as Parquet files with a manifest, and imported into another store.

An export is a folder: one Parquet file per table holding the run's rows (its model, the languages
it uses, its corpus and texts, the run row with its plan and params, sequences, tokens,
`route_lists`, router probabilities and logits, scores, generations, trained experts, and the
routing summaries), then `manifest.json`, written last: a folder without one is an unfinished
export. The manifest names the format and its version, the store schema and Polyroute version
that wrote it, and per file its table, row count, size and SHA-256.

An import checks the whole manifest and every file before it writes anything, then inserts the
run in one transaction under a new run id (the model, languages and corpus only where the store
lacks them), or, with `merge_into`, adds the exported sequences to an existing trace run of the
same model and corpus, their seq_ids moved past the run's own. A plain import copies the
exported routing summaries when they describe the exported sequences (else rebuilds them); a
merge computes the new sequences' summaries against the run's own sequences, exactly as the
writer would have had one run traced them all (`store.upgrades.add_summaries`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from moe_core.errors import ParameterError
from store import migrations, summaries, upgrades
from store.connection import Store, translate
from store.errors import StoreError

FORMAT = "polyroute-run"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Measured on a 50M-decision run (bench/exchange.py): zstd level 1 writes route_lists in half the
# time of the default level 3 for 4% more bytes, and 35% fewer bytes than snappy or lz4. Row groups
# of 16K rows (DuckDB's default is 122K) keep what a write holds in memory small: a route_lists row
# group of a 48-layer, top-8 model then holds about 30M values.
COMPRESSION = "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 16384)"
# What `polyroute export` and `import` let DuckDB hold: else its buffer pool keeps every block it
# read, up to 80% of the machine's memory on a large run.
MEMORY_LIMIT = "1GB"
# An export's size per routing decision, measured on a 50M-decision run (bench/exchange.py: 317 MB,
# router probabilities and summaries included): what a front end says before it exports.
BYTES_PER_DECISION = 6.3
AGAIN = "export the run again, or copy its whole folder"

Progress = Callable[[int, int], None]  # (steps done, steps in all): a step is a table

# The run's own rows: table -> whether it holds seq_ids (renumbered on a merge).
RUN_TABLES = {
    "sequences": True,
    "tokens": True,
    "route_lists": True,
    "router_probs": True,
    "router_logits": True,
    "eval_results": False,
    "generations": False,
    "adaptation_experts": False,
}
SUMMARY_TABLES = summaries.TABLES

# What each file holds, as a query on the store with the parameter $run.
_RUN = "(SELECT {column} FROM runs WHERE run_id = $run)"
_QUERIES = {
    "models": f"SELECT * FROM models WHERE model_id = {_RUN.format(column='model_id')}",
    "languages": (
        "SELECT * FROM languages WHERE lang IN ("
        "SELECT lang FROM sequences WHERE run_id = $run UNION SELECT lang FROM eval_results WHERE run_id = $run "
        "UNION SELECT lang FROM generations WHERE run_id = $run "
        f"UNION SELECT unnest(langs) FROM corpora WHERE corpus_id = {_RUN.format(column='corpus_id')}) ORDER BY lang"
    ),
    "corpora": f"SELECT * FROM corpora WHERE corpus_id = {_RUN.format(column='corpus_id')}",
    "texts": f"SELECT * FROM texts WHERE corpus_id = {_RUN.format(column='corpus_id')}",
    "runs": "SELECT * FROM runs WHERE run_id = $run",
    **{table: f"SELECT * FROM {table} WHERE run_id = $run" for table in (*RUN_TABLES, *SUMMARY_TABLES)},
}
TABLES = tuple(_QUERIES)


@dataclass(frozen=True, kw_only=True)
class ExportedFile:
    table: str
    file: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What `manifest.json` says: the writer's versions, the exported run and its files."""

    format: str
    format_version: int
    schema_version: int
    polyroute_version: str
    exported_at: str
    run: dict[str, Any]  # run_id, kind, model_id, corpus_id, status, n_sequences, n_decisions
    files: tuple[ExportedFile, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "schema_version": self.schema_version,
            "polyroute_version": self.polyroute_version,
            "exported_at": self.exported_at,
            "run": self.run,
            "files": [vars(file) for file in self.files],
        }

    def rows(self, table: str) -> int:
        return next(file.rows for file in self.files if file.table == table)


@dataclass(frozen=True)
class VerifiedExport:
    """An export folder whose manifest and files were checked (`verify_export`)."""

    folder: Path
    manifest: Manifest

    def path(self, table: str) -> str:
        return str(self.folder / f"{table}.parquet")


def polyroute_version() -> str:
    try:
        return metadata.version("polyroute")
    except metadata.PackageNotFoundError:
        return "unknown"


def schema_version() -> int:
    return migrations.available()[-1][0]


# Export ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunSize:
    """How much of a run an export holds: its sequences and routing decisions (tokens x MoE layers x top-k)."""

    n_sequences: int
    n_decisions: int

    @property
    def estimated_bytes(self) -> int:
        return round(self.n_decisions * BYTES_PER_DECISION)


def run_size(store: Store, run: int) -> RunSize:
    """The size of run `run` (which must exist)."""
    row = store.con.execute(
        "SELECT count(s.seq_id), coalesce(sum(s.n_tokens), 0) * any_value(len(m.moe_layers) * m.top_k) "
        "FROM runs AS r JOIN models AS m USING (model_id) LEFT JOIN sequences AS s USING (run_id) "
        "WHERE r.run_id = ?",
        [run],
    ).fetchone()
    assert row is not None
    return RunSize(n_sequences=int(row[0]), n_decisions=int(row[1] or 0))


def export_run(store: Store, run: int, out: str | Path, progress: Progress | None = None) -> Manifest:
    """Write run `run` to the folder `out` (new or empty) as Parquet files, then its manifest;
    returns the manifest. On an error the files written are removed again. A store shared with the
    app (which reads and writes no file but itself) hands its rows to a DuckDB of the export's own."""
    folder = Path(out).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "a file" if not folder.is_dir() else "a folder that is not empty"
        raise ParameterError(f"{{out}} {folder} is {what}: export into a new or empty folder")
    con = store.con.cursor()  # a transaction of its own: one snapshot of the run, beside other sessions
    created = not folder.exists()
    written: list[Path] = []
    # One thread: with two, DuckDB holds batches back to write them in order, and a 500M-decision
    # run's export peaked at 2.4 GB beside 1.2 GB (and took longer on a busy 2-core machine). The
    # setting is global, so a shared store (the app) keeps its own; restored when done.
    threads = None if store.shared else con.execute("SELECT current_setting('threads')").fetchone()
    if threads:
        con.execute("SET threads = 1")
    try:
        con.begin()
        row = con.execute(
            "SELECT run_id, kind, model_id, corpus_id, status, n_planned FROM runs WHERE run_id = ?", [run]
        ).fetchone()
        if row is None:
            raise ParameterError(f"there is no run {run} in store {store.path}: give {{run}} one of its runs")
        size = run_size(Store(store.path, con, read_only=True), run)  # in the export's snapshot
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for step, (table, query) in enumerate(_QUERIES.items()):
            path = folder / f"{table}.parquet"
            written.append(path)
            rows = _copy_to(con, query, run, path, shared=store.shared)
            files.append(
                ExportedFile(table=table, file=path.name, rows=rows, bytes=path.stat().st_size, sha256=_sha256(path))
            )
            if progress:
                progress(step + 1, len(_QUERIES))
        con.commit()
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            schema_version=max(migrations.applied(con)),
            polyroute_version=polyroute_version(),
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run={
                "run_id": row[0],
                "kind": row[1],
                "model_id": row[2],
                "corpus_id": row[3],
                "status": row[4],
                "n_planned": row[5],
                "n_sequences": size.n_sequences,
                "n_decisions": size.n_decisions,
            },
            files=tuple(files),
        )
        partial = folder / f".{MANIFEST}.new"
        written.append(partial)
        partial.write_text(json.dumps(manifest.as_json(), indent=2) + "\n", encoding="utf-8")
        partial.replace(folder / MANIFEST)  # last: a folder without a manifest is an unfinished export
        return manifest
    except BaseException as error:
        _rollback(con)
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, duckdb.Error):
            raise translate(error, store.path) from error
        raise
    finally:
        if threads:
            con.execute(f"SET threads = {int(threads[0])}")
        con.close()


def _copy_to(con: duckdb.DuckDBPyConnection, query: str, run: int, path: Path, *, shared: bool) -> int:
    """Write the rows of `query` on run `run` to the Parquet file `path`; returns their count."""
    target = str(path).replace("'", "''")
    if not shared:
        (rows,) = con.execute(f"COPY ({query}) TO '{target}' {COMPRESSION}", {"run": run}).fetchone()  # type: ignore[misc]
        return int(rows)
    # The app's store may touch no file but itself (store.shared.LOCKED_DOWN): its rows stream as
    # Arrow batches into an in-memory DuckDB that writes the same Parquet.
    batches = con.execute(query, {"run": run}).to_arrow_reader()
    with duckdb.connect(config={"threads": 1}) as writer:
        writer.register("batches", batches)
        (rows,) = writer.execute(f"COPY (SELECT * FROM batches) TO '{target}' {COMPRESSION}").fetchone()  # type: ignore[misc]
    return int(rows)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):  # no transaction open (it failed before, or was committed)
        con.rollback()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# Verify ----------------------------------------------------------------------------------------


def verify_export(in_dir: str | Path) -> VerifiedExport:
    """Check an export folder before anything is written: its manifest (format, versions) and
    every file it lists (present, of its size, checksum and row count)."""
    folder = Path(in_dir).expanduser()
    if not folder.is_dir():
        raise StoreError(f"no export folder at {folder}: give the folder that an export of a run wrote")
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(
            f"{folder} has no {MANIFEST}: it is not a Polyroute export, or its export did not finish; {AGAIN}"
        ) from None
    except (OSError, ValueError) as error:
        raise StoreError(f"the manifest of {folder} cannot be read ({error}); {AGAIN}") from None
    manifest = _parse_manifest(raw, folder)
    if manifest.format_version > FORMAT_VERSION or manifest.schema_version > schema_version():
        raise StoreError(
            f"the export in {folder} was written by a newer Polyroute ({manifest.polyroute_version}: store schema "
            f"{manifest.schema_version}, export format {manifest.format_version}; this one reads schema "
            f"{schema_version()}, format {FORMAT_VERSION}): upgrade Polyroute to import it"
        )
    listed = {file.table for file in manifest.files}
    if missing := [table for table in TABLES if table not in listed]:
        raise StoreError(f"the manifest of {folder} lists no file for {', '.join(missing)}; {AGAIN}")
    for file in manifest.files:
        path = folder / file.file
        if file.file != f"{file.table}.parquet" or not path.is_file():
            raise StoreError(f"the export in {folder} is partial: {file.file} is missing; {AGAIN}")
        if path.stat().st_size != file.bytes:
            raise StoreError(
                f"{path} has {path.stat().st_size} bytes where the manifest says {file.bytes}: "
                f"it was cut short or changed since the export; {AGAIN}"
            )
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # hashlib lets go of the GIL
        digests = list(pool.map(lambda file: _sha256(folder / file.file), manifest.files))
    for file, digest in zip(manifest.files, digests, strict=True):
        if digest != file.sha256:
            raise StoreError(
                f"checksum mismatch: {folder / file.file} is not the file that was exported (SHA-256 {digest[:12]}… "
                f"where the manifest says {file.sha256[:12]}…); {AGAIN}"
            )
        try:
            rows = pq.read_metadata(folder / file.file).num_rows
        except Exception as error:  # pyarrow raises several kinds for a bad file
            raise StoreError(f"{folder / file.file} is not a readable Parquet file ({error}); {AGAIN}") from None
        if rows != file.rows:
            raise StoreError(f"{folder / file.file} holds {rows} rows where the manifest says {file.rows}; {AGAIN}")
    return VerifiedExport(folder, manifest)


def _parse_manifest(raw: Any, folder: Path) -> Manifest:
    try:
        if raw.get("format") != FORMAT:
            raise StoreError(f"{folder / MANIFEST} is not the manifest of a Polyroute run export; {AGAIN}")
        return Manifest(
            format=raw["format"],
            format_version=int(raw["format_version"]),
            schema_version=int(raw["schema_version"]),
            polyroute_version=str(raw["polyroute_version"]),
            exported_at=str(raw["exported_at"]),
            run=dict(raw["run"]),
            files=tuple(
                ExportedFile(
                    table=str(f["table"]),
                    file=str(f["file"]),
                    rows=int(f["rows"]),
                    bytes=int(f["bytes"]),
                    sha256=str(f["sha256"]),
                )
                for f in raw["files"]
            ),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise StoreError(f"the manifest of {folder} is damaged (missing or bad {error}); {AGAIN}") from None


# Import ----------------------------------------------------------------------------------------


def import_run(
    store: Store,
    in_dir: str | Path | VerifiedExport,
    merge_into: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Add the exported run in `in_dir` to `store`, all or nothing; returns its run id there (that
    of `merge_into` when its sequences were added to that trace run)."""
    export = in_dir if isinstance(in_dir, VerifiedExport) else verify_export(in_dir)
    steps = len(RUN_TABLES) + 2  # the run, its tables, its summaries: reported once every check passed
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, steps)

    with store.transaction() as con:
        reader = _Reader(con, export)
        run = reader.run_row()
        _add_model(con, reader, store)
        con.execute(
            "INSERT INTO languages BY NAME SELECT * FROM read_parquet($path) ON CONFLICT DO NOTHING",
            {"path": export.path("languages")},
        )
        _add_corpus(con, reader, store)
        if merge_into is None:
            run_id = _new_run(con, reader, run)
            offset = 0
        else:
            run_id, offset = merge_into, _check_merge(con, reader, run, merge_into, store)
        step()
        for table, numbered in RUN_TABLES.items():
            replace = "CAST($run AS INTEGER) AS run_id" + (", seq_id + $offset AS seq_id" if numbered else "")
            params: dict[str, Any] = {"run": run_id, "path": export.path(table)}
            if numbered:
                params["offset"] = offset
            con.execute(f"INSERT INTO {table} BY NAME SELECT * REPLACE ({replace}) FROM read_parquet($path)", params)
            step()
        inner = Store(store.path, con, read_only=False)
        if merge_into is not None:
            upgrades.add_summaries(inner, run_id, offset)
        elif _copy_summaries(con, reader, run_id) is False:
            upgrades.rebuild_in_transaction(inner, run_id)
        step()
    return run_id


class _Reader:
    """Reads of the export's files on the import's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, export: VerifiedExport) -> None:
        self.con = con
        self.export = export

    def one(self, table: str, columns: str) -> tuple[Any, ...] | None:
        return self.con.execute(
            f"SELECT {columns} FROM read_parquet($path)", {"path": self.export.path(table)}
        ).fetchone()

    def run_row(self) -> dict[str, Any]:
        names = ("run_id", "kind", "model_id", "corpus_id", "status", "n_planned", "weight_unit", "params")
        row = self.one("runs", ", ".join(names))
        if row is None:
            raise StoreError(f"the export in {self.export.folder} holds no run: export the run again")
        run = dict(zip(names, row, strict=True))
        run["params"] = json.loads(run["params"])
        return run


def _add_model(con: duckdb.DuckDBPyConnection, reader: _Reader, store: Store) -> None:
    model = reader.one("models", "model_id, config_hash")
    assert model is not None  # the manifest's row counts were checked, and a run has a model
    stored = con.execute("SELECT config_hash FROM models WHERE model_id = ?", [model[0]]).fetchone()
    if stored is None:
        con.execute(
            "INSERT INTO models BY NAME SELECT * FROM read_parquet($path)", {"path": reader.export.path("models")}
        )
    elif stored[0] != model[1]:
        raise StoreError(
            f"store {store.path} holds another model named {model[0]} (config hash {stored[0][:12]}, the export's "
            f"{model[1][:12]}): import into another store"
        )


def _add_corpus(con: duckdb.DuckDBPyConnection, reader: _Reader, store: Store) -> None:
    corpus = reader.one("corpora", "corpus_id, content_hash")
    if corpus is None:
        return
    stored = con.execute("SELECT content_hash FROM corpora WHERE corpus_id = ?", [corpus[0]]).fetchone()
    if stored is None:
        for table in ("corpora", "texts"):
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet($path)", {"path": reader.export.path(table)}
            )
    elif stored[0] != corpus[1]:
        raise StoreError(
            f"store {store.path} holds another corpus named {corpus[0]} (content hash {stored[0][:12]}, the "
            f"export's {corpus[1][:12]}): import into another store"
        )


def _provenance(reader: _Reader, run: dict[str, Any]) -> dict[str, Any]:
    manifest = reader.export.manifest
    return {
        "run_id": run["run_id"],
        "exported_at": manifest.exported_at,
        "polyroute_version": manifest.polyroute_version,
    }


def _new_run(con: duckdb.DuckDBPyConnection, reader: _Reader, run: dict[str, Any]) -> int:
    row = con.execute("SELECT nextval('run_ids')").fetchone()
    assert row is not None
    params = {**run["params"], "imported_from": _provenance(reader, run)}
    con.execute(
        "INSERT INTO runs BY NAME SELECT * REPLACE (CAST($run AS INTEGER) AS run_id, CAST($params AS JSON) AS params) "
        "FROM read_parquet($path)",
        {"run": int(row[0]), "params": json.dumps(params), "path": reader.export.path("runs")},
    )
    return int(row[0])


# What a run stored beside its routes: router probabilities, router logits, routing weights.
_STORED = """
SELECT (SELECT count(*) > 0 FROM router_probs WHERE run_id = $run),
       (SELECT count(*) > 0 FROM router_logits WHERE run_id = $run),
       (SELECT count(weight_codes) > 0 FROM (SELECT weight_codes FROM route_lists WHERE run_id = $run LIMIT 1))
"""

# Trace settings that change which tokens a model read: runs merged into one must share them.
_SAME_SETTINGS = ("hf_max_tokens", "hf_template", "prompt_template")


def _check_merge(
    con: duckdb.DuckDBPyConnection, reader: _Reader, run: dict[str, Any], target: int, store: Store
) -> int:
    """Refuse a merge that would not analyse as one run; returns the seq_id offset of the new sequences."""
    row = con.execute(
        "SELECT kind, model_id, corpus_id, status, weight_unit, params FROM runs WHERE run_id = ?", [target]
    ).fetchone()
    if row is None:
        raise ParameterError(
            f"there is no run {target} in store {store.path}: give {{merge_into}} one of its trace runs"
        )
    kind, model_id, corpus_id, status, weight_unit, params_json = row
    params = json.loads(params_json)
    theirs = f"the exported run {run['run_id']}"
    if kind != "trace" or run["kind"] != "trace":
        raise ParameterError(
            f"only trace runs merge: run {target} is a {kind} run and {theirs} a {run['kind']} run; "
            "import it without {merge_into}"
        )
    if (model_id, corpus_id) != (run["model_id"], run["corpus_id"]):
        raise ParameterError(
            f"run {target} traced model {model_id} over corpus {corpus_id}, {theirs} model {run['model_id']} over "
            f"corpus {run['corpus_id']}: only runs of one model and corpus merge; import it without {{merge_into}}"
        )
    for name, value in (("run " + str(target), status), (theirs, run["status"])):
        if value != "complete":
            raise ParameterError(f"{name} is {value}, not complete: resume its trace until it is complete, then merge")
    differ = [key for key in _SAME_SETTINGS if params.get(key) != run["params"].get(key)]
    if differ or weight_unit != run["weight_unit"]:
        what = ", ".join(f"{key} {params.get(key)!r} against {run['params'].get(key)!r}" for key in differ)
        raise ParameterError(
            f"run {target} and {theirs} were traced with other settings ({what or 'weight unit'}): "
            "import it without {merge_into}"
        )
    mine = con.execute(_STORED, {"run": target}).fetchone() or ()
    weighted = con.execute(
        "SELECT count(weight_codes) > 0 FROM (SELECT weight_codes FROM read_parquet($path) LIMIT 1)",
        {"path": reader.export.path("route_lists")},
    ).fetchone()
    manifest = reader.export.manifest
    exported = (manifest.rows("router_probs") > 0, manifest.rows("router_logits") > 0, bool(weighted and weighted[0]))
    for has, other, what in zip(
        mine, exported, ("router probabilities", "router logits", "routing weights"), strict=True
    ):
        if bool(has) != other:
            raise ParameterError(
                f"run {target} {'has' if has else 'has no'} {what} and {theirs} {'has' if other else 'has no'}: "
                "runs merge only when they stored the same; import it without {merge_into}"
            )
    (overlap,) = con.execute(
        "SELECT count(*) FROM sequences AS s JOIN read_parquet($path) AS e USING (item_id, lang) WHERE s.run_id = $run",
        {"run": target, "path": reader.export.path("sequences")},
    ).fetchone()  # type: ignore[misc]
    if overlap:
        raise ParameterError(
            f"run {target} already holds {overlap} of the exported sequences (the same items in the same "
            f"languages): a merge adds languages or items a run lacks; import it without {{merge_into}}"
        )
    (offset,) = con.execute("SELECT coalesce(max(seq_id) + 1, 0) FROM sequences WHERE run_id = ?", [target]).fetchone()  # type: ignore[misc]
    langs = list(params.get("langs", []))
    merged = [*langs, *(lang for lang in run["params"].get("langs", []) if lang not in langs)]
    note = {**_provenance(reader, run), "langs": run["params"].get("langs", []), "seq_offset": int(offset)}
    note["n_sequences"] = manifest.rows("sequences")
    params = {**params, "langs": merged, "merged": [*params.get("merged", []), note]}
    con.execute(
        "UPDATE runs SET n_planned = n_planned + ?, params = ? WHERE run_id = ?",
        [int(run["n_planned"]), json.dumps(params), target],
    )
    return int(offset)


def _copy_summaries(con: duckdb.DuckDBPyConnection, reader: _Reader, run_id: int) -> bool:
    """Copy the exported routing summaries when they describe exactly the exported sequences (every
    sequence and MoE layer once, each language's sequences and tokens); False when they do not."""
    for table in SUMMARY_TABLES:
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT * REPLACE (CAST($run AS INTEGER) AS run_id) FROM read_parquet($path)",
            {"run": run_id, "path": reader.export.path(table)},
        )
    (bad,) = con.execute(_SUMMARY_CHECK, {"run": run_id}).fetchone()  # type: ignore[misc]
    if bad:
        for table in SUMMARY_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    return not bad


# Rows that disagree: a sequence x MoE layer without exactly one summary, or a language x layer whose
# counts are not its sequences'.
_SUMMARY_CHECK = """
WITH layers AS (
    SELECT unnest(m.moe_layers) AS layer FROM runs AS r JOIN models AS m USING (model_id) WHERE r.run_id = $run
), expected AS (
    SELECT s.seq_id, l.layer FROM sequences AS s, layers AS l WHERE s.run_id = $run
), found AS (
    SELECT seq_id, layer, count(*) AS n FROM sequence_routing WHERE run_id = $run GROUP BY ALL
), langs AS (
    SELECT s.lang, l.layer, count(*) AS n_sequences, sum(s.n_tokens) AS n_tokens
    FROM sequences AS s, layers AS l WHERE s.run_id = $run GROUP BY ALL
), kept AS (
    SELECT lang, layer, n_sequences, n_tokens FROM language_routing WHERE run_id = $run
)
SELECT (SELECT count(*) FROM expected FULL JOIN found USING (seq_id, layer) WHERE found.n IS DISTINCT FROM 1)
     + (SELECT count(*) FROM langs FULL JOIN kept USING (lang, layer)
        WHERE langs.n_sequences IS DISTINCT FROM kept.n_sequences OR langs.n_tokens IS DISTINCT FROM kept.n_tokens)
"""
