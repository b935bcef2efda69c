# The app image (CPU): the Streamlit explorer, the polyroute command and the engine on CPU.
# A GPU server image (vLLM) comes with the GPU backend.
FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    POLYROUTE_DB=/app/data/demo.duckdb
WORKDIR /app

COPY requirements.txt pyproject.toml ./
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
