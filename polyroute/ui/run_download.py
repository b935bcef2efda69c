"""A whole run as a download, on the Overview and the SQL console: its export (`store.exchange`:
Parquet files and a manifest, what `polyroute export` writes) zipped in a temporary folder. The
zip is built when asked for, with a progress bar, and held for this session until the download;
a run too large for that is sized, and sent to the command line, which writes to disk instead.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from polyroute.ui.frame import explained
from store import SharedStore
from store import queries as q
from store.exchange import Progress, RunSize, export_run, run_size

# The largest export offered as a download: the zip is held in the app's memory until it is fetched.
MAX_DOWNLOAD_BYTES = 200_000_000


@dataclass(frozen=True)
class PreparedZip:
    """A run's zipped export, kept with the store and run it belongs to."""

    store: str
    run_id: int
    data: bytes


def export_zip(store: SharedStore, run_id: int, progress: Progress | None = None) -> bytes:
    """Run `run_id` exported and zipped, as the bytes of the zip (a folder `run-<id>/` inside)."""
    with tempfile.TemporaryDirectory(prefix="polyroute-export-") as temp:
        folder = Path(temp) / f"run-{run_id}"
        with store.reading(snapshot=False) as reader:
            export_run(reader, run_id, folder, progress)
        archive = Path(temp) / f"{folder.name}.zip"
        # Stored, not deflated: the Parquet files are compressed already.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
            for path in sorted(folder.iterdir()):
                zipped.write(path, f"{folder.name}/{path.name}")
        return archive.read_bytes()


def run_download(store: SharedStore, runs: Sequence[q.RunRow], key: str) -> None:
    """Choose one of `runs` and download it as a zip: its size first, and the command line instead
    for a run larger than `MAX_DOWNLOAD_BYTES`. `key` keeps the widgets of two pages apart."""
    if not runs:
        st.caption("The store holds no run to download yet.")
        return
    by_id = {run.run_id: run for run in runs}
    run_id = st.selectbox(
        "Run to download",
        list(by_id),
        key=f"{key}_run",
        format_func=lambda run_id: _label(by_id[run_id]),
    )
    with explained(), store.reading() as reader:
        size = run_size(reader, run_id)
    held = st.session_state.get(f"{key}_zip")
    if isinstance(held, PreparedZip) and (held.store, held.run_id) == (str(store.path), run_id):
        st.download_button(
            f"Download run {run_id} ({_megabytes(len(held.data))}, zip)",
            held.data,
            f"polyroute-run-{run_id}.zip",
            "application/zip",
            on_click="ignore",
            icon=":material/download:",
            key=f"{key}_download",
        )
        return
    if size.estimated_bytes > MAX_DOWNLOAD_BYTES:
        st.info(
            f"Run {run_id} holds {_what(size)}, about {_megabytes(size.estimated_bytes)} as Parquet files: too much "
            f"to download from the browser. Export it in a terminal, where it is written straight to disk: "
            f"`polyroute export --run {run_id} --out run-{run_id} --db {store.path}`",
            icon=":material/terminal:",
        )
        return
    st.caption(
        f"Run {run_id} holds {_what(size)}: its rows as Parquet files with a manifest (about "
        f"{_megabytes(size.estimated_bytes)}), the same folder `polyroute export` writes, which "
        "`polyroute import` adds to another store."
    )
    if st.button("Prepare the download", icon=":material/folder_zip:", key=f"{key}_prepare"):
        bar = st.progress(0.0, text=f"Exporting run {run_id}")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"Exporting run {run_id}: {done} of {total} tables")

        with explained():
            data = export_zip(store, run_id, progress)
        st.session_state[f"{key}_zip"] = PreparedZip(str(store.path), run_id, data)
        st.rerun()


def _label(run: q.RunRow) -> str:
    return f"run {run.run_id} · {run.kind} · {run.model_id}" + (f" · {run.corpus_id}" if run.corpus_id else "")


def _what(size: RunSize) -> str:
    if not size.n_sequences:
        return "no traced sequences (its scores, answers or experts go with it)"
    return f"{size.n_sequences:,} sequences and {size.n_decisions:,} routing decisions"


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f} MB"
