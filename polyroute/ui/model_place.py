"""Where the app runs models: here, from a checkpoint folder, or on GPU servers (`polyroute serve`).

The choice sits in the sidebar of the pages that run a model (Collect, Steering, Evaluate, Adapt)
and is kept across pages, so a user names the GPU server once. Connections are cached per URL and
token for a minute: long enough that page reruns do not reconnect, short enough that a restarted
server with another model is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from polyroute.ui.frame import keep, remembered

if TYPE_CHECKING:  # httpx and the backends load only when a server is used
    from moe_core.backends.remote import RemoteBackend
    from moe_core.records import ModelInfo

HERE, SERVER = "this machine", "a GPU server"


@dataclass(frozen=True, kw_only=True)
class ModelPlace:
    """Run the model in this process, or (`remote`) on the `polyroute serve` URLs in `servers`
    (empty until the user types one)."""

    remote: bool = False
    servers: tuple[str, ...] = ()
    token: str | None = None


def choose_place(*, sharded: bool = False) -> ModelPlace:
    """The sidebar's 'Run models on' choice; with `sharded`, several URLs share a trace by language."""
    where = st.sidebar.radio(
        "Run models on",
        [HERE, SERVER],
        key=remembered("model_place", HERE),
        on_change=keep,
        args=("model_place",),
        help="A GPU server is Polyroute's model server (`polyroute serve`) on another machine; the store stays here.",
    )
    if where == HERE:
        return ModelPlace()
    urls = st.sidebar.text_input(
        "Server URL" + ("s" if sharded else ""),
        key=remembered("server_urls", "http://127.0.0.1:8765"),
        on_change=keep,
        args=("server_urls",),
        help="http://HOST:PORT of `polyroute serve`"
        + ("; several, comma-separated, share a trace by language" if sharded else ""),
    )
    token = st.sidebar.text_input(
        "Server token",
        type="password",
        key=remembered("server_token", ""),
        on_change=keep,
        args=("server_token",),
        help="The access token the server was started with (needed when it listens beyond 127.0.0.1).",
    )
    servers = tuple(url.strip() for url in urls.split(",") if url.strip())
    if not sharded:
        servers = servers[:1]
    return ModelPlace(remote=True, servers=servers, token=token or None)


@st.cache_resource(show_spinner="Connecting to the GPU server…", ttl=60, max_entries=8)
def connected(url: str, token: str | None) -> RemoteBackend:
    """A client of the server at `url` (a failed connection is not cached: the page can retry)."""
    from moe_core.backends.remote import RemoteBackend

    return RemoteBackend(url, token=token)


def describe(info: ModelInfo, where: str) -> str:
    """One line on the model a server runs."""
    return (
        f"{where} runs **{info.model_id}** ({info.arch}, {len(info.moe_layers)} MoE layers, "
        f"{info.n_experts} experts, top-{info.top_k})."
    )
