"""Whole jobs, each called the same way by the CLI and by the app's background jobs: `trace` (a
corpus through a model into a run), `evaluate`, `adapt` (RISE), `demo` (the demo store), `steer`
(one prompt without and with a plan); `common` gives them their backends and corpus rows.

Each opens the store first, checks every input before a model loads, and marks its run failed
(resumable where it can be) when it stops early.
"""
