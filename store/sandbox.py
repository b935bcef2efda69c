"""The read-only SQL console behind `polyroute sql` (and the app's SQL page), with its examples.

A statement runs in a read-only transaction on a connection with external access disabled and
the configuration locked (its own read-only connection from the CLI, a cursor of the app's
shared store in the app), so it can neither write, nor read files, nor loosen those settings.
Before it runs, its parse tree is checked: only a single SELECT-like statement is accepted, and
table functions outside a short list of generators and catalog views are refused, because some
that parse as SELECT change the database (checkpoint, enable_logging, which can even abort the
process) or run SQL text the check cannot see (query). What reveals the machine's paths (the
store's and temporary folder's, through settings or the database list) is refused as well.

Results stop at a row cap. A timer interrupts queries that run too long; since DuckDB checks for
an interrupt only between chunks, one scalar call (`repeat('x', 2000000000)`) can outrun it, so a
store file (the CLI) is queried in a child process that is killed at the time cap and cannot grow
past a memory cap. The app's shared store is queried in its own process, under its interrupt.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from store.connection import Store, open_store, translate
from store.errors import SqlRefused, StoreError
from store.shared import LOCKED_DOWN, SharedStore

# The public tables of the store (docs/design.md), for the console's help and its error messages.
TABLES = {
    "models": "one row per model: its layers, MoE layers, experts and top-k",
    "languages": "every FLORES-200 language: name, script, family, resource class 0-5",
    "corpora": "the parallel corpora that were read, and their languages",
    "texts": "each corpus's texts; the same item_id means the same meaning in every language",
    "runs": "each trace (or other) run: model, corpus, backend, status",
    "sequences": "each traced text of a run: its item, language and token count",
    "tokens": "each token of a sequence: position, token id, text piece",
    "routes": "each routing decision: token, layer, rank in the top-k, expert, weight",
    "router_probs": "a sequence's mean router probabilities over all experts, per layer",
    "router_logits": "each token's raw router logits, per layer (runs traced with --save-logits only)",
    "sequence_routing": "a sequence's expert hits, weight distribution and consistency, per layer",
    "language_routing": "a language's sequence and token counts and entropy sums, per run and layer",
    "language_expert_routing": "how often a language's tokens pick each expert, per run and layer",
    "language_pair_divergence": "two languages' summed divergences over their shared items, per layer",
    "eval_results": "each evaluation score: task, language, variant (unsteered, a plan, a sweep point), metric",
    "generations": "each answer an evaluation generated, with its prompt, per language and variant",
    "adaptation_experts": "each expert a RISE adaptation trained: zone, layer, expert, the scores that chose it",
}
_HINT = f"the console reads the store's tables: {', '.join(TABLES)}"

# Generators and read-only catalog views; every other table function is refused.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        *("range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree"),
        *("duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_constraints", "duckdb_indexes"),
        *("duckdb_sequences", "duckdb_schemas", "duckdb_types", "duckdb_functions"),
        *("duckdb_keywords", "pragma_table_info", "pragma_storage_info"),
        *("pragma_database_size", "pragma_version"),
    }
)
_FILE_READER = re.compile(r"^(read_|parquet_|glob$|sniff_csv$)|_scan$")
_FILE_PATH = re.compile(r"[/\\.:]")  # a table name with these is a file DuckDB would read
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)
# What reads settings, among them the store's and the temporary folder's paths.
_SETTING_READERS = frozenset({"current_setting", "pg_settings"})
# Table functions and the system views named like them, for `FROM duckdb_settings` without parentheses.
_SYSTEM_RELATIONS = """
    SELECT lower(function_name) FROM duckdb_functions() WHERE function_type = 'table'
    UNION SELECT lower(view_name) FROM duckdb_views() WHERE internal AND schema_name = 'main'"""
# Scalar functions told how much to build (the argument at this position). DuckDB cannot interrupt
# one call, and a chunk holds 2,048 rows of it, so the size must be a plain number, capped, and
# such calls cannot nest: that bounds what one chunk holds in the app, where no child process runs.
_SIZE_ARGUMENT = {
    "repeat": 1,
    "lpad": 1,
    "rpad": 1,
    "list_resize": 1,
    "array_resize": 1,
    "range": 0,
    "generate_series": 0,
}
MAX_BUILT = 100_000
_CHILD_GRACE_S = 2.0  # past the time cap, for the child's own interrupt to answer before it is killed
CHILD_MEMORY_BYTES = 4 << 30  # the address space a console query's process may use
_CHILD_DUCKDB_MEMORY = "1GiB"  # what DuckDB's buffer manager may hold of that


@dataclass(frozen=True, kw_only=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than the cap


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one read-only statement, saying what was found."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.PermissionException as error:  # IMPORT DATABASE reads its files while parsing
        raise SqlRefused(f"not allowed here: {_reason(error)}") from None
    except duckdb.Error as error:
        raise SqlRefused(f"the SQL does not parse: {_reason(error)}") from None
    if not statements:
        raise SqlRefused("there is no query to run: type one, or pick an example")
    if len(statements) > 1:
        raise SqlRefused(f"one statement at a time, please ({len(statements)} given)")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        explained = _EXPLAIN.match(statement.query)
        if not explained:
            raise SqlRefused("write EXPLAIN (or EXPLAIN ANALYZE) first, then one SELECT")
        check_statement(con, statement.query[explained.end() :])
        return
    if statement.type != duckdb.StatementType.SELECT:
        raise SqlRefused(f"only read-only queries (SELECT, WITH ... SELECT) run here, not {_command(statement.query)}")
    _check_tree(con, statement.query)


def _command(query: str) -> str:
    """A statement's first keyword as typed (two for FORCE INSTALL and FORCE CHECKPOINT)."""
    words = _COMMENTS.sub(" ", query).upper().split()
    return " ".join(words[:2] if words[:1] == ["FORCE"] else words[:1])


def _check_tree(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse a SELECT whose parse tree calls a table function outside the allowed ones, nextval(), a
    settings reader or an unbounded builder (`_SIZE_ARGUMENT`), or names a file where a table goes."""
    # The query goes in as a string literal, not a bound parameter: binding one makes DuckDB import
    # pandas, which costs the CLI's fresh child process more than the whole query.
    literal = "'" + query.replace("'", "''") + "'"
    tree = json.loads(con.execute(f"SELECT json_serialize_sql({literal})").fetchone()[0])  # type: ignore[index]
    if tree.get("error"):
        raise SqlRefused(f"the query cannot be checked, so it does not run: {tree.get('error_message')}")
    # Listing the system relations takes longer than the rest of the check, and only a name that is not
    # one of the store's tables needs them: they are read once, when the first such name comes.
    system = functools.cache(lambda: {row[0] for row in con.execute(_SYSTEM_RELATIONS).fetchall()})
    table_calls: set[int] = set()  # `FROM range(n)` streams its rows, under the interrupt: no size cap
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
            if node.get("type") == "TABLE_FUNCTION":
                table_calls.add(id(node["function"]))
                _check_table_function(str(node["function"].get("function_name")).lower())
            elif node.get("class") == "FUNCTION":
                _check_scalar_function(str(node.get("function_name")).lower())
                if id(node) not in table_calls:
                    _check_size(node)
            elif node.get("type") == "BASE_TABLE":
                _check_table_name(str(node.get("table_name")), system)


def _check_scalar_function(name: str) -> None:
    if name == "nextval":
        raise SqlRefused("nextval() would change the store (it advances a sequence); the console only reads")
    if name in _SETTING_READERS:
        _refuse_settings(name)


def _check_size(call: dict[str, Any]) -> None:
    name = str(call.get("function_name")).lower()
    if name not in _SIZE_ARGUMENT:
        return
    arguments = call.get("children") or []
    size = arguments[_SIZE_ARGUMENT[name]] if len(arguments) > _SIZE_ARGUMENT[name] else {}
    value = _constant(size)
    if name == "repeat":  # what is repeated counts too: a literal, so that its length is known
        repeated = _constant(arguments[0]) if arguments else None
        value = value * len(repeated) if isinstance(value, int) and isinstance(repeated, str | list) else None
    elif name in ("range", "generate_series") and len(arguments) > 1:  # (start, stop[, step]) as a list
        bounds = [_constant(argument) for argument in arguments]
        plain = all(isinstance(bound, int) and not isinstance(bound, bool) for bound in bounds)
        value = abs(bounds[1] - bounds[0]) // max(1, abs(bounds[2]) if len(bounds) > 2 else 1) if plain else None
    if isinstance(value, bool) or not isinstance(value, int) or value > MAX_BUILT:
        raise SqlRefused(
            f"{name}() builds at most {MAX_BUILT:,} characters or elements here, from plain values (a literal "
            "repeated a plain number of times); narrow it down"
        )
    inner: list[Any] = list(arguments)
    while inner:
        node = inner.pop()
        if isinstance(node, dict):
            if node.get("class") == "FUNCTION" and str(node.get("function_name")).lower() in _SIZE_ARGUMENT:
                raise SqlRefused(f"{name}() of another {', '.join(_SIZE_ARGUMENT)} call is not available here")
            inner.extend(node.values())
        elif isinstance(node, list):
            inner.extend(node)


def _constant(node: dict[str, Any]) -> Any:
    """A literal's value (None for anything else, NULL included)."""
    return node.get("value", {}).get("value") if node.get("type") == "VALUE_CONSTANT" else None


def _refuse_settings(name: str) -> None:
    raise SqlRefused(f"{name} is not available in the console: settings hold this machine's paths; {_HINT}")


def _check_table_name(name: str, system: Callable[[], set[str]]) -> None:
    """A name in FROM is a file to DuckDB when it looks like a path, and a table function or system
    view (`FROM duckdb_settings`) when it is named like one: both are checked as such."""
    if _FILE_PATH.search(name):
        raise SqlRefused(f"reading files is not allowed here ('{name}'); {_HINT}")
    if name.lower() in _SETTING_READERS:
        _refuse_settings(name)
    if name.lower() not in TABLES and name.lower() in system():
        _check_table_function(name.lower())


def _check_table_function(name: str) -> None:
    if name in ALLOWED_TABLE_FUNCTIONS:
        return
    if _FILE_READER.search(name):
        raise SqlRefused(f"reading files is not allowed here ({name}); {_HINT}")
    raise SqlRefused(f"{name}() is not available in the console; {_HINT}")


def _reason(error: duckdb.Error) -> str:
    """DuckDB's message without the query excerpt it appends, on one line."""
    return str(error).split("\n\n")[0].strip().replace("\n", " ")


def run_sql(source: str | Path | SharedStore, sql: str, *, max_rows: int = 1000, timeout_s: float = 10.0) -> SqlResult:
    """Run one read-only query on a store (a file, or the app's shared store) and return at most
    `max_rows` rows, stopping it after `timeout_s` seconds."""
    if isinstance(source, SharedStore):
        with source.reading(snapshot=False) as store:
            return _run(store, sql, max_rows, timeout_s)
    return _run_in_child(Path(source), sql, max_rows, timeout_s)


def _run_in_child(path: Path, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
    """`_run` on the file in a process of its own (a fresh interpreter: the caller may hold threads,
    and its main module need not be importable), killed when it outlives the time cap."""
    package_root = str(Path(__file__).resolve().parent.parent)  # the child imports this very code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-c", "from store.sandbox import child_main; child_main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = child.communicate(pickle.dumps((path, sql, max_rows, timeout_s)), timeout=timeout_s + _CHILD_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise SqlRefused(f"the query ran longer than {timeout_s:g} s and was stopped; narrow it down") from None
    if child.returncode != 0 or not out:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        raise SqlRefused(
            f"the query stopped the process that ran it ({last[0][:200]}); queries here may use at most "
            f"{CHILD_MEMORY_BYTES >> 30} GiB of memory: narrow it down"
        )
    outcome = pickle.loads(out)
    if isinstance(outcome, Exception):
        raise outcome
    result: SqlResult = outcome
    return result


def child_main() -> None:
    """The child's side: read the query from stdin, run it under the memory cap, and write its
    result or its refusal to stdout (both pickled)."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    path, sql, max_rows, timeout_s = pickle.loads(sys.stdin.buffer.read())
    outcome: SqlResult | Exception
    try:
        with open_store(path, read_only=True, config={**LOCKED_DOWN, "memory_limit": _CHILD_DUCKDB_MEMORY}) as store:
            store.con.execute("SET lock_configuration = true")
            outcome = _run(store, sql, max_rows, timeout_s)
    except StoreError as error:
        outcome = error
    except MemoryError:
        outcome = SqlRefused(
            f"the query needed more than {CHILD_MEMORY_BYTES >> 30} GiB of memory and was stopped; narrow it down"
        )
    sys.stdout.buffer.write(pickle.dumps(outcome))


def _run(store: Store, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
    con = store.con
    try:
        check_statement(con, sql)
        # Read-only even on the app's writable instance: whatever the check missed cannot write.
        con.execute("BEGIN TRANSACTION READ ONLY")
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(max_rows + 1)
        finally:
            timer.cancel()
            con.execute("ROLLBACK")
    except duckdb.InterruptException:
        raise SqlRefused(f"the query ran longer than {timeout_s:g} s and was stopped; narrow it down") from None
    except duckdb.OutOfMemoryException as error:
        raise SqlRefused(
            f"the query needs more memory than the console has ({_reason(error)}); narrow it down"
        ) from None
    except (duckdb.PermissionException, duckdb.TransactionException) as error:
        raise SqlRefused(f"not allowed here: {_reason(error)}") from None
    except duckdb.Error as error:
        if type(translate(error, store.path)) is not StoreError:  # the store itself is locked or damaged
            raise translate(error, store.path) from None
        hint = f"; {_HINT}" if "Table with name" in str(error) else ""
        raise SqlRefused(f"{_reason(error)}{hint}") from None
    return SqlResult(columns=columns, rows=rows[:max_rows], truncated=len(rows) > max_rows)


# Where the examples look: the newest trace run, so that they work on any store as written.
_LATEST = "(SELECT max(run_id) FROM runs WHERE kind = 'trace')"

# Plain-English title -> query, at least one for every table in TABLES; the SQL page offers them.
EXAMPLES = {
    "Models in the store and their shape": """\
SELECT model_id, arch, n_layers, len(moe_layers) AS moe_layers, n_experts, top_k,
       n_shared_experts, scoring
FROM models
ORDER BY model_id""",
    "Languages of one family, with script and resource class": """\
-- Change 'Indo-European' to another family (Dravidian, Turkic, Sino-Tibetan, ...).
SELECT lang, name, script, branch, resource_class
FROM languages
WHERE family = 'Indo-European'
ORDER BY resource_class DESC, lang""",
    "Parallel corpora and their languages": """\
SELECT corpus_id, name, source, n_items, len(langs) AS n_langs, langs, added_at
FROM corpora
ORDER BY added_at DESC""",
    "One sentence in every language of the newest corpus": """\
-- Change item_index = 0 to see another sentence.
SELECT lang, item_id, text
FROM texts
WHERE corpus_id = (SELECT corpus_id FROM corpora ORDER BY added_at DESC LIMIT 1)
  AND item_index = 0
ORDER BY lang""",
    "Runs: what was traced, with which model, and how far it got": """\
SELECT r.run_id, r.kind, r.model_id, r.corpus_id, r.backend, r.status,
       count(s.seq_id) AS sequences_stored, r.n_planned, r.created_at
FROM runs AS r LEFT JOIN sequences AS s USING (run_id)
GROUP BY ALL
ORDER BY r.run_id""",
    "Sequences and tokens per language, with family and script": f"""\
SELECT s.lang, l.name, l.family, l.script, count(*) AS sequences,
       sum(s.n_tokens) AS tokens, round(avg(s.n_tokens), 1) AS tokens_per_sequence
FROM sequences AS s LEFT JOIN languages AS l USING (lang)
WHERE s.run_id = {_LATEST}
GROUP BY ALL
ORDER BY tokens_per_sequence DESC""",
    "How the tokenizer splits one sentence, language by language": f"""\
-- The run's first item; write an item_id (e.g. 'item3') in place of the min(...) to see another.
SELECT s.lang, count(*) AS n_tokens, string_agg(t.piece, ' | ' ORDER BY t.pos) AS pieces
FROM sequences AS s JOIN tokens AS t USING (run_id, seq_id)
WHERE s.run_id = {_LATEST}
  AND s.item_id = (SELECT min(item_id) FROM sequences WHERE run_id = {_LATEST})
  AND NOT t.special
GROUP BY s.lang
ORDER BY n_tokens""",
    "Tokens of one sentence with their top-1 expert in each layer": f"""\
-- The run's first sequence; write a seq_id (e.g. 3) in place of the (SELECT min ...) to see another.
SELECT t.pos, t.piece, list(r.expert ORDER BY r.layer) AS top1_expert_per_layer
FROM tokens AS t JOIN routes AS r USING (run_id, seq_id, pos)
WHERE t.run_id = {_LATEST}
  AND t.seq_id = (SELECT min(seq_id) FROM sequences WHERE run_id = {_LATEST})
  AND r.rank = 0
GROUP BY t.pos, t.piece
ORDER BY t.pos""",
    "Most used experts per layer for one language": f"""\
-- Change 'eng_Latn' to another language code of the run (see the sequences table).
WITH picks AS (
    SELECT r.layer, r.expert, count(*) AS n
    FROM routes AS r JOIN sequences AS s USING (run_id, seq_id)
    WHERE r.run_id = {_LATEST} AND s.lang = 'eng_Latn'
    GROUP BY ALL
)
SELECT layer, expert, n AS tokens_routed,
       round(100.0 * n / sum(n) OVER (PARTITION BY layer), 1) AS pct_of_layer
FROM picks
QUALIFY row_number() OVER (PARTITION BY layer ORDER BY n DESC, expert) <= 3
ORDER BY layer, n DESC""",
    "How sure the router is of its top-1 expert, per layer and language": f"""\
-- The mean weight of the top-1 expert: near 1 = one clear choice, near 1/top_k = a toss-up.
SELECT s.lang, r.layer, round(avg(r.weight), 3) AS mean_top1_weight, count(*) AS tokens
FROM routes AS r JOIN sequences AS s USING (run_id, seq_id)
WHERE r.run_id = {_LATEST} AND r.rank = 0
GROUP BY ALL
ORDER BY s.lang, r.layer""",
    "Router entropy per layer and language (from mean router probabilities)": f"""\
-- Entropy of a sequence's mean router probabilities: high = spread over many experts.
SELECT s.lang, p.layer,
       round(avg(list_sum(list_transform(p.probs, lambda q: CASE WHEN q > 0 THEN -q * ln(q) ELSE 0 END))), 3)
           AS mean_entropy
FROM router_probs AS p JOIN sequences AS s USING (run_id, seq_id)
WHERE p.run_id = {_LATEST}
GROUP BY ALL
ORDER BY s.lang, p.layer""",
    "Mean routing entropy per language and layer (from the summary tables)": f"""\
-- Sums over sequences divided by counts; entropy_hard is the entropy of the experts' hit shares.
SELECT lang, layer, n_sequences, n_tokens, round(entropy_hard / n_sequences, 3) AS mean_entropy_hard
FROM language_routing
WHERE run_id = {_LATEST}
ORDER BY lang, layer""",
    "Each language's most used expert per layer (from the summary tables)": f"""\
SELECT lang, layer, expert, hits, round(frequency_sum, 3) AS frequency_sum
FROM language_expert_routing
WHERE run_id = {_LATEST}
QUALIFY row_number() OVER (PARTITION BY lang, layer ORDER BY hits DESC, expert) = 1
ORDER BY lang, layer""",
    "How consistently a sequence keeps its experts, per language and layer": f"""\
-- consistency is NULL for sequences under two tokens; avg leaves those out.
SELECT s.lang, r.layer, round(avg(r.consistency), 3) AS mean_consistency, count(*) AS sequences
FROM sequence_routing AS r JOIN sequences AS s USING (run_id, seq_id)
WHERE r.run_id = {_LATEST}
GROUP BY ALL
ORDER BY s.lang, r.layer""",
    "Language pairs by routing divergence per layer (from the summary tables)": f"""\
-- source 'hard' compares activation frequencies; 'soft' and 'weight' the router's distributions.
SELECT lang_a, lang_b, layer, n_items, round(divergence_sum / n_items, 4) AS mean_divergence
FROM language_pair_divergence
WHERE run_id = {_LATEST} AND source = 'hard' AND n_items > 0
ORDER BY layer, mean_divergence DESC""",
    "Raw router logits of one sentence's tokens (only runs traced with --save-logits)": """\
-- Empty unless a run was traced with --save-logits.
SELECT g.run_id, g.seq_id, g.pos, t.piece, g.layer,
       list_position(g.logits, list_max(g.logits)) - 1 AS top_expert,
       round(list_max(g.logits), 3) AS top_logit, g.logits
FROM router_logits AS g JOIN tokens AS t USING (run_id, seq_id, pos)
WHERE (g.run_id, g.seq_id) = (SELECT (max(run_id), min(seq_id)) FROM router_logits
                              WHERE run_id = (SELECT max(run_id) FROM router_logits))
ORDER BY g.pos, g.layer""",
    "Scores with and without steering, per language (only after `polyroute eval`)": """\
-- Empty until an evaluation has run.
SELECT e.run_id, e.task, e.lang, e.metric,
       max(e.value) FILTER (WHERE e.variant = 'unsteered') AS unsteered,
       max(e.value) FILTER (WHERE e.variant <> 'unsteered') AS best_steered,
       max(e.n) AS items
FROM eval_results AS e JOIN runs AS r USING (run_id)
WHERE r.kind = 'evaluation'  -- adaptations keep their before/after losses here too
GROUP BY ALL
ORDER BY e.run_id, e.task, e.lang, e.metric""",
    "Experts the latest adaptation trained, zone by zone (only after `polyroute adapt`)": """\
-- Empty until an adaptation has run.
SELECT a.run_id, r.params ->> 'target' AS target, a.rank, a.zone, a.layer, a.expert,
       round(a.score, 3) AS score, round(a.target_freq, 3) AS target_freq, round(a.mean_freq, 3) AS mean_freq
FROM adaptation_experts AS a JOIN runs AS r USING (run_id)
WHERE a.run_id = (SELECT max(run_id) FROM adaptation_experts)
ORDER BY a.rank""",
    "Held-out loss before and after the latest adaptation, per language (only after `polyroute adapt`)": """\
-- Empty until an adaptation has run. The target language should drop the most.
SELECT e.lang,
       round(max(e.value) FILTER (WHERE e.variant = 'before'), 4) AS loss_before,
       round(max(e.value) FILTER (WHERE e.variant = 'after'), 4) AS loss_after,
       round(loss_after - loss_before, 4) AS change, max(e.n) AS tokens
FROM eval_results AS e
WHERE e.run_id = (SELECT max(run_id) FROM adaptation_experts) AND e.task = 'causal_lm' AND e.metric = 'loss'
GROUP BY e.lang
ORDER BY change""",
    "Generated answers of the latest evaluation (only after `polyroute eval`)": """\
-- Empty until an evaluation has run.
SELECT variant, lang, item_id, prompt, output
FROM generations
WHERE run_id = (SELECT max(run_id) FROM generations)
ORDER BY lang, item_id, variant
LIMIT 50""",
}
