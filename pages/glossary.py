"""Glossary: the words, letters and signs the pages use, in plain words; `?term=...` in the URL
opens on one of them."""

from __future__ import annotations

import streamlit as st

from polyroute.ui.frame import page
from polyroute.ui.glossary import GLOSSARY

page("Glossary", "The words, letters and signs the pages use, in plain words.")
find = st.text_input("Find a term", key="glossary_find", bind="query-params", placeholder="e.g. divergence, thr, ␣")
wanted = find.strip().lower()
shown = 0
for heading, terms in GLOSSARY:
    rows = {term: meaning for term, meaning in terms.items() if wanted in f"{term} {meaning}".lower()}
    if not rows:
        continue
    st.subheader(heading)
    st.markdown("\n".join(f"- **{term}**: {meaning}" for term, meaning in rows.items()))
    shown += len(rows)
if not shown:
    st.info(f"No term mentions “{find.strip()}”.", icon=":material/info:")
