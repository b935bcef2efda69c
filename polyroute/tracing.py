"""Old name of `polyroute.workflows.trace`, kept only until bench/scale.py (owned elsewhere) imports the
new one; nothing else may import it. Remove it then."""

from polyroute.workflows.trace import TraceOutcome, TraceRequest, resume_trace, start_trace

__all__ = ["TraceOutcome", "TraceRequest", "resume_trace", "start_trace"]
