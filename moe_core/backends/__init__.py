"""Backends: where the model runs (`hf` in process; `remote` and `vllm` come later)."""
