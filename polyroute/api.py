"""The Python API for notebooks: `import polyroute as pr`.

`pr.open(path)` gives a `StoreHandle`: its runs as a DataFrame, one `Run` by id, and the read-only
SQL console (`store.sandbox`, as `polyroute sql` and the SQL page run it). A `Run` computes every
analysis of the registry (`polyroute.analyses.registry.ANALYSES`) through `run_analysis`, the
function `polyroute analyze` calls, so a notebook gets the numbers the CLI and the app show. Each
returns a `Result`: the analysis's tables as DataFrames (`.frame` is the main one), the parameters
that produced them (`.params`), a summary and notes, and the typed result whose arrays the tables
are made from (`.typed`).

`pr.trace`, `pr.demo`, `pr.plan`, `pr.steer` and `pr.evaluate` call the jobs the CLI and the app
call (`polyroute.workflows`, `polyroute.plans`), with a progress bar (tqdm when installed).

Bad values raise a `ParameterError` (a `PolyrouteError`) naming the parameter as it is spelled
here (`tau must lie in [0, 1]`). The store is opened for each call and closed after, so a notebook
never holds its lock between cells and a trace into the same file can run.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from moe_core.errors import ParameterError
from moe_core.languages import normalise_lang, parse_langs
from polyroute import default_db, plans
from polyroute.analyses.registry import ANALYSES, Param, run_analysis
from polyroute.run_data import AnalysisResult, RunData, Selection
from store import Store, open_store
from store import queries as q

if TYPE_CHECKING:
    from moe_core.backends.base import Backend
    from moe_core.steering import SteeringPlan

Layers = int | tuple[int, int] | None  # one decoder layer, or an inclusive range (first, last)


@dataclass(frozen=True, kw_only=True)
class Result:
    """What an analysis (or a steered prompt, or an evaluation) found: `tables` by name as
    DataFrames, the first being the main one (`frame`); `params`, everything that decided the
    numbers (run, model, languages, layers, the analysis's parameters); a `summary` and `notes`;
    for an analysis, `typed`: its typed result, the numpy arrays the tables are made from (e.g.
    divergence's `normalised` [languages, layers]; its class's docstring gives each shape)."""

    name: str
    params: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    typed: AnalysisResult | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The main table."""
        return next(iter(self.tables.values()))

    @classmethod
    def of(cls, result: AnalysisResult) -> Result:
        """An analysis's result, its tables as DataFrames."""
        return cls(
            name=result.analysis,
            params=dict(result.params),
            tables={table.name: pd.DataFrame(table.rows, columns=list(table.columns)) for table in result.tables},
            summary=dict(result.summary),
            notes=list(result.notes),
            typed=result,
        )

    def _repr_html_(self) -> str:
        """How a notebook shows a result: its parameters, then its main table."""
        params = escape(", ".join(f"{key}={value}" for key, value in self.params.items()))
        notes = "".join(f"<p><i>note: {escape(note)}</i></p>" for note in self.notes)
        return f"<p><b>{escape(self.name)}</b>: {params}</p>{notes}" + self.frame.to_html(max_rows=20)


class StoreHandle:
    """A store file, opened read-only for each call (`pr.open(path)`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        with self._reading():  # a missing or damaged store fails here, with its fix
            pass

    def __repr__(self) -> str:
        return f"StoreHandle({str(self.path)!r})"

    @contextmanager
    def _reading(self) -> Iterator[Store]:
        with open_store(self.path, read_only=True) as store:
            yield store

    def runs(self) -> pd.DataFrame:
        """Every run of the store (trace, evaluation, adaptation): id, kind, model, corpus, status,
        sequences planned and stored, tokens, its settings (`params`) and when it was created."""
        with self._reading() as store:
            rows = [asdict(run) for run in q.list_runs(store)]
        return pd.DataFrame(rows, columns=[column.name for column in fields(q.RunRow)])

    def run(self, run_id: int) -> Run:
        """The trace run `run_id` of the store, whose routing the analyses read."""
        with self._reading() as store:
            found = q.get_run(store, run_id)
            if found is None:
                ids = ", ".join(str(run.run_id) for run in q.list_runs(store) if run.kind == "trace") or "none yet"
                raise ParameterError(f"{{run_id}} {run_id} is no run of {self.path}; its trace runs: {ids}")
        if found.kind != "trace":
            raise ParameterError(
                f"{{run_id}} {run_id} is an {found.kind} run, not a trace: the analyses read a trace's routing"
            )
        return Run(self, run_id)

    def compare(self, runs: Sequence[int], analysis: str = "divergence", *, ref: str = "eng_Latn") -> Result:
        """Several runs side by side, as `polyroute analyze divergence --runs A,B,...` and the Compare
        runs page: per-layer curves on normalised depth, steered minus unsteered, band means."""
        entry = ANALYSES.get(analysis)
        if entry is None or entry.compare is None:
            comparable = ", ".join(name for name, found in ANALYSES.items() if found.compare is not None)
            raise ParameterError(f"{{analysis}} {analysis!r} compares no runs: use {comparable}")
        with self._reading() as store:
            return Result.of(entry.compare(store, [int(run_id) for run_id in runs], Selection(ref=normalise_lang(ref))))

    def sql(self, query: str, *, max_rows: int = 1000, timeout_s: float = 10.0) -> pd.DataFrame:
        """One read-only SQL query on the store, as `polyroute sql` and the app's SQL page run it
        (`store.sandbox`: writes, file reads and settings are refused) -> at most `max_rows` rows."""
        from store.sandbox import run_sql

        result = run_sql(self.path, query, max_rows=max_rows, timeout_s=timeout_s)
        if result.truncated:
            warnings.warn(f"showing the first {max_rows} rows: raise max_rows for more", stacklevel=2)
        return pd.DataFrame(result.rows, columns=result.columns)


class Run:
    """One trace run of a store and its analyses. Every analysis takes the selection keywords
    `langs` (default every language of the run), `layers` (one decoder layer or (first, last);
    for band analyses the band, default the middle zone), `ref` (default eng_Latn) and `source`
    (auto, soft, weight or hard), and its own parameters as `polyroute analyze NAME --help` lists
    them (`--max-pairs` is `max_pairs`)."""

    def __init__(self, store: StoreHandle, run_id: int) -> None:
        self.store = store
        self.id = run_id

    def __repr__(self) -> str:
        return f"Run({self.id}, store={str(self.store.path)!r})"

    def info(self) -> dict[str, Any]:
        """The run's row of `StoreHandle.runs()`: model, corpus, status, counts and settings."""
        with self.store._reading() as store:
            found = q.get_run(store, self.id)
        if found is None:  # deleted since (`polyroute runs delete`, the Overview)
            raise ParameterError(f"run {self.id} is no longer in {self.store.path}: see pr.open(...).runs()")
        return asdict(found)

    def analysis(
        self,
        name: str,
        *,
        langs: str | Sequence[str] | None = None,
        layers: Layers = None,
        ref: str = "eng_Latn",
        source: str = "auto",
        **params: Any,
    ) -> Result:
        """The analysis `name` of the registry (`pr.ANALYSES`) on this run, with its parameters."""
        entry = ANALYSES.get(name)
        if entry is None:
            raise ParameterError(f"unknown analysis {{name}} {name!r}: use one of {', '.join(ANALYSES)}")
        known = {param.name: param for param in entry.params}
        unknown = [key for key in params if key not in known]
        if unknown:
            names = ", ".join("{" + key + "}" for key in unknown)
            takes = ", ".join(["langs", "layers", "ref", "source", *known])
            raise ParameterError(f"{name} takes no {names}; it takes {takes}")
        missing = [param.name for param in entry.params if param.required and params.get(param.name) is None]
        if missing:
            raise ParameterError(f"{name} needs {{{missing[0]}}}")
        selection = Selection(langs=_langs(langs), layers=_layers(layers), ref=normalise_lang(ref), source=source)
        values = {param.name: _value(param, params.get(param.name, param.default)) for param in entry.params}
        with self.store._reading() as store:
            return Result.of(run_analysis(name, RunData(store, self.id, selection), values))

    def divergence(self, **options: Any) -> Result:
        """Per-layer divergence of each language from `ref` over aligned pairs (the U-shape)."""
        return self.analysis("divergence", **options)

    def entropy(self, **options: Any) -> Result:
        """Routing entropy per layer (sequence-level; `token_level=True` also per token, needs logits)."""
        return self.analysis("entropy", **options)

    def consistency(self, **options: Any) -> Result:
        """Within-sequence consistency: the mean Jaccard of token pairs' top-k sets (`max_pairs`, `seed`)."""
        return self.analysis("consistency", **options)

    def experts(self, **options: Any) -> Result:
        """Delta-tau specialised experts (`tau`): language experts, or task experts against `ref_run`."""
        return self.analysis("experts", **options)

    def shared(self, **options: Any) -> Result:
        """Shared and exclusive experts over the languages (`k`, `thr`, `group`) and reliance on them."""
        return self.analysis("shared", **options)

    def rise(self, **options: Any) -> Result:
        """RISE scores and the budgeted subnetwork of `target` (`budget`, `ratios`, `alpha`)."""
        return self.analysis("rise", **options)

    def similarity(self, **options: Any) -> Result:
        """Language similarity in the band, clusters against families, the expert-sharing graph
        (`measure`, `clusters`, `top_n`)."""
        return self.analysis("similarity", **options)

    def isolation(self, **options: Any) -> Result:
        """Routing isolation between high- and low-resource languages by layer (`high`, `low`, `top_n`)."""
        return self.analysis("isolation", **options)

    def expert(self, **options: Any) -> Result:
        """One expert (`layer`, `expert`): its use per language and in the layers around, the tokens
        sent to it most (from `sequences` per language), the experts chosen with it, its labels."""
        return self.analysis("expert", **options)

    def correlation(self, **options: Any) -> Result:
        """Correlation of middle-band divergence with per-language scores: `eval_run` (with
        `metric`, `variant`), or `scores`, a file or a {lang: score} mapping (with `score_column`)."""
        return self.analysis("correlation", **options)


def open(path: str | Path | None = None) -> StoreHandle:
    """The store at `path` (default: $POLYROUTE_DB, else data/demo.duckdb), read-only."""
    return StoreHandle(default_db() if path is None else path)


def demo(db: str | Path | None = None, *, progress: bool = True) -> Run:
    """The demo run (the shipped tiny model over every built-in language) in `db`, traced first
    (about 10 s) when the store does not hold it yet, as `polyroute demo` builds it."""
    from polyroute.workflows.common import quiet_libraries
    from polyroute.workflows.demo import build_demo_store

    path = Path(default_db() if db is None else db).expanduser()
    quiet_libraries()
    with _bars("demo trace", progress) as factory:
        outcome = build_demo_store(path, factory)
    return open(path).run(outcome.run_id)


def trace(
    *,
    model: str | Path | Backend | None = None,
    corpus: str | Path,
    langs: str | Sequence[str],
    db: str | Path | None = None,
    servers: Sequence[str] = (),
    token: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    require_aligned: bool = False,
    batch_size: int = 8,
    save_logits: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    max_tokens: int = 512,
    template: str = "plain",
    model_id: str | None = None,
    progress: bool = True,
) -> Run:
    """Trace `model` (a checkpoint folder or a backend; or `polyroute serve` `servers`) over
    `corpus` in `langs` into the store `db`, as `polyroute trace` does, and return the new run."""
    from moe_core.backends.base import Backend
    from moe_core.backends.options import HFOptions
    from polyroute.workflows.common import quiet_libraries
    from polyroute.workflows.trace import TraceRequest, start_trace

    path = Path(default_db() if db is None else db).expanduser()
    quiet_libraries()
    request = TraceRequest(
        db=path,
        model=model if model is None or isinstance(model, Backend) else Path(model),
        servers=tuple(servers),
        token=token,
        corpus=corpus,
        langs=_langs(langs) or [],
        split=split,
        require_aligned=require_aligned,
        limit=limit,
        batch_size=batch_size,
        save_logits=save_logits,
        options=HFOptions(device=device, dtype=dtype, max_tokens=max_tokens, template=template, model_id=model_id),
    )
    with _bars("run", progress) as factory:
        outcome = start_trace(request, factory)
    return Run(open(path), outcome.run_id)


def plan(run: Run, kind: str, *, output: str | Path | None = None, **options: Any) -> SteeringPlan:
    """A steering plan from `run`, as `polyroute plan KIND` builds it: `task-experts` (lang,
    ref_run, tau, layers, strength), `language-experts` (lang, ref, tau, layers, strength),
    `shared` (langs, k, thr, layers, strength) or `exclusive` (lang, window, k, thr); saved to
    `output` when given. `layers` and `window` take (first, last) decoder layers."""
    import inspect

    builder = plans.BUILDERS.get(kind.replace("_", "-"))
    if builder is None:
        raise ParameterError(f"unknown {{kind}} {kind!r}: use one of {', '.join(plans.BUILDERS)}")
    accepted = [name for name in inspect.signature(builder).parameters if name not in ("store", "run_id")]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        names = ", ".join("{" + key + "}" for key in unknown)
        raise ParameterError(f"a {kind} plan takes no {names}; it takes {', '.join(accepted)}")
    if "ref_run" in options:
        options["ref_run_id"] = options.pop("ref_run")
    for key in ("lang", "ref"):
        if key in options:
            options[key] = normalise_lang(options[key])
    if "langs" in options:
        options["langs"] = _langs(options["langs"])
    if "layers" in options:
        options["layers"] = _layers(options["layers"])
    if isinstance(options.get("window"), (int, list, tuple)):
        options["window"] = _layers(options["window"], "window")
    with run.store._reading() as store:
        built = builder(store, run.id, **options)
    if output is not None:
        built.save(Path(output))
    return built


def steer(
    *,
    model: str | Path | Backend,
    plan: SteeringPlan | str | Path,
    prompt: str,
    max_new_tokens: int = 32,
    device: str = "cpu",
    dtype: str = "auto",
) -> Result:
    """`prompt` generated greedily without and with `plan` on `model` (a checkpoint folder or a
    backend), as `polyroute steer` and the Steering page do: `summary` holds both texts, `frame`
    the mean routing mass on the plan's experts per MoE layer and generation."""
    from moe_core.backends.base import Backend
    from moe_core.backends.options import HFOptions
    from moe_core.steering import SteeringPlan
    from polyroute.workflows.common import connect, quiet_libraries
    from polyroute.workflows.steer import mass_rows, steer_prompt

    if not prompt.strip():
        raise ParameterError("{prompt} is empty: give the text to continue")
    chosen = plan if isinstance(plan, SteeringPlan) else SteeringPlan.load(Path(plan))
    quiet_libraries()
    backend = connect(model if isinstance(model, Backend) else Path(model), HFOptions(device=device, dtype=dtype))[0]
    done = steer_prompt(backend, prompt, chosen, max_new_tokens)
    n_experts = backend.info().n_experts
    labels = ("unsteered", "steered")
    masses = pd.DataFrame(mass_rows(chosen, done.plain.routing, done.steered.routing, n_experts, labels))
    return Result(
        name="steer",
        params={
            "model": backend.info().model_id,
            "method": chosen.method,
            "band": f"{chosen.band[0]}-{chosen.band[1]}",
            "strength": chosen.strength,
            "max_new_tokens": max_new_tokens,
        },
        tables={"mass": masses},
        summary={"prompt": prompt, "unsteered": done.plain.texts[0], "steered": done.steered.texts[0]},
    )


def evaluate(
    *,
    task: str,
    model: str | Path | Backend,
    corpus: str,
    langs: str | Sequence[str],
    db: str | Path | None = None,
    plan: SteeringPlan | str | Path | None = None,
    sweep: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "auto",
    progress: bool = True,
) -> Result:
    """Score `model` on the benchmark `task` in `langs`, unsteered and with `plan` (at the settings
    of `sweep`, e.g. "lambda=0,0.5,1"), into the store `db` as `polyroute eval` does: `frame` holds
    the scores, `params["run"]` the evaluation run (for `Run.correlation(eval_run=...)`)."""
    from moe_core.backends.base import Backend
    from moe_core.backends.options import HFOptions
    from moe_core.evaluation.sweeps import parse_sweep
    from polyroute.workflows.common import quiet_libraries
    from polyroute.workflows.evaluate import EvalRequest, run_evaluation

    path = Path(default_db() if db is None else db).expanduser()
    quiet_libraries()
    request = EvalRequest(
        db=path,
        task=task,
        model=model if isinstance(model, Backend) else Path(model),
        corpus=corpus,
        langs=_langs(langs) or [],
        split=split,
        limit=limit,
        plan=Path(plan) if isinstance(plan, str) else plan,
        sweep=parse_sweep(sweep) if sweep else None,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        options=HFOptions(device=device, dtype=dtype),
    )

    with _bars("run", progress, unit="answer") as factory:
        outcome = run_evaluation(request, lambda run_id, total: factory(run_id, total, 0))
    scores = pd.DataFrame([asdict(score) for score in outcome.scores])
    return Result(
        name="evaluate",
        params={"run": outcome.run_id, "task": task, "langs": ",".join(request.langs), "db": str(path)},
        tables={"scores": scores},
        summary={"items": outcome.n_items},
    )


# values as the analyses take them -------------------------------------------------------------


def _langs(langs: str | Sequence[str] | None) -> list[str] | None:
    """Codes from "eng_Latn,de" or ["eng_Latn", "de"] -> FLORES-200 codes (None: every language)."""
    if langs is None:
        return None
    if isinstance(langs, str):
        return parse_langs(langs)
    return list(dict.fromkeys(normalise_lang(str(lang)) for lang in langs))


def _layers(layers: Layers, name: str = "layers") -> tuple[int, int] | None:
    """One decoder layer or an inclusive (first, last) range -> (first, last)."""
    if layers is None:
        return None
    band = (layers, layers) if isinstance(layers, int) else tuple(layers)
    if len(band) != 2 or not all(isinstance(end, int) for end in band) or band[0] > band[1]:
        raise ParameterError(f"{{{name}}} takes one layer or (first, last) with first <= last, not {layers!r}")
    return band[0], band[1]


def _value(param: Param, value: Any) -> Any:
    """A parameter's Python value as its analysis takes it, checked against its kind."""
    if param.kind == "flag":  # off unless given, as on the command line
        return bool(value)
    if value is None:
        return None
    name = "{" + param.name + "}"
    if param.kind in ("int", "seed", "run") and (isinstance(value, bool) or not isinstance(value, int)):
        raise ParameterError(f"{name} takes a whole number, not {value!r}")
    if param.kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ParameterError(f"{name} takes a number, not {value!r}")
    if param.choices is not None and value not in param.choices:
        raise ParameterError(f"{name} takes one of {', '.join(map(str, param.choices))}, not {value!r}")
    if param.kind == "lang":
        return normalise_lang(str(value))
    if param.kind == "langs":
        return _langs(value)
    if param.kind == "ratios":
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            shares = tuple(float(part) for part in parts)
        except (TypeError, ValueError):
            shares = ()
        if len(shares) != 3:
            raise ParameterError(f"{name} takes three shares (shallow, middle, deep), not {value!r}")
        return shares
    if param.kind == "path" and not isinstance(value, Mapping):
        return Path(value)
    return value


# progress ----------------------------------------------------------------------------------------


@contextmanager
def _bars(label: str, shown: bool, unit: str = "seq") -> Iterator[Callable[[int, int, int], Callable[..., None]]]:
    """A progress factory for the jobs ((run_id, total, tokens) -> on_progress(done, ...)): tqdm
    bars when tqdm is installed, else a plain line every tenth; every bar closed on the way out."""
    bars: list[Any] = []

    def factory(run_id: int, total: int, tokens: int) -> Callable[..., None]:
        if not shown:
            return lambda done, *rest: None
        try:
            from tqdm import tqdm
        except ImportError:
            bar: Any = _PlainBar(f"{label} {run_id}", total, unit)
        else:
            bar = tqdm(total=total, unit=unit, desc=f"{label} {run_id}", file=sys.stderr)
        bars.append(bar)
        return lambda done, *rest: bar.update(done)

    try:
        yield factory
    finally:
        for bar in bars:
            bar.close()


class _PlainBar:
    """A progress line on stderr at every tenth of the work, for where tqdm is not installed."""

    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit, self.done, self.said = label, max(total, 1), unit, 0, -1

    def update(self, done: int) -> None:
        self.done += done
        tenth = 10 * self.done // self.total
        if tenth > self.said:
            self.said = tenth
            print(f"{self.label}: {self.done}/{self.total} {self.unit}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.said < 10:
            print(f"{self.label}: {self.done}/{self.total} {self.unit}", file=sys.stderr, flush=True)
