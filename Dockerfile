# The streamcrm worker image: slim, non-root, dependencies pinned by requirements.lock.
#   docker build -t streamcrm:latest .       (docker-compose.yml builds it as well)
# Stage 1 builds wheels (compilers stay here); stage 2 installs them and nothing else.
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY streamcrm ./streamcrm
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheels /wheels /tmp/wheels
COPY requirements.lock /tmp/requirements.lock
# --no-index: exactly the wheels built above, at the pinned versions, nothing fetched later.
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
        -r /tmp/requirements.lock streamcrm \
    && rm -rf /tmp/wheels /tmp/requirements.lock \
    && useradd --create-home --uid 10001 streamcrm
USER 10001:10001
WORKDIR /home/streamcrm
ENV STREAMCRM_DATA_DIR=/home/streamcrm/data \
    STREAMCRM_WEB_PORT=6066 \
    STREAMCRM_WEB_BIND=0.0.0.0
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=3)"]
CMD ["streamcrm", "worker"]
