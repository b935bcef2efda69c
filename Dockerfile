# Two images:
#   app         (CPU) the Streamlit explorer, the polyroute command and the engine on CPU:
#               docker build --target app -t polyroute-app .
#   gpu-server  (vLLM base) `polyroute serve --backend vllm` for the app's "Run models on: a GPU server":
#               docker build --target gpu-server -t polyroute-gpu .
#               docker run --gpus all -p 8765:8765 -e POLYROUTE_TOKEN=... -v /models/m:/model polyroute-gpu
FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    POLYROUTE_DB=/app/data/demo.duckdb
WORKDIR /app

COPY requirements.txt requirements-base.txt pyproject.toml ./
RUN pip install -r requirements.txt
COPY moe_core ./moe_core
COPY store ./store
COPY polyroute ./polyroute
COPY pages ./pages
COPY app.py README.md ./
COPY .streamlit ./.streamlit
RUN pip install --no-deps -e .

RUN useradd --create-home polyroute && mkdir -p /app/data && chown polyroute /app/data
USER polyroute
EXPOSE 8501
# Like `make run`: build the demo store on first start (about 15 s on 2 cores), then open the app on it.
CMD ["sh", "-c", "[ -f \"$POLYROUTE_DB\" ] || polyroute demo; exec streamlit run app.py --server.address 0.0.0.0 --server.port 8501"]


# The GPU server: vLLM's own image (CUDA, torch and vLLM as vLLM builds them), Polyroute on top.
# Installing Polyroute into vLLM's environment registers its `vllm.general_plugins` entry point,
# which makes the in-tree MoE models steerable; no vLLM file is patched.
FROM vllm/vllm-openai:v0.32.0 AS gpu-server

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements-base.txt requirements-gpu.txt pyproject.toml README.md ./
RUN python3 -m pip install -r requirements-gpu.txt
COPY moe_core ./moe_core
COPY store ./store
COPY polyroute ./polyroute
RUN python3 -m pip install --no-deps -e .

EXPOSE 8765
# Bound to every interface inside the container, so the token is required: pass POLYROUTE_TOKEN.
# Mount the checkpoint at /model; add e.g. `--tensor-parallel-size 4` after the image name.
ENTRYPOINT ["polyroute", "serve", "--backend", "vllm", "--host", "0.0.0.0", "--port", "8765", "--model", "/model"]
