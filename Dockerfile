# Worker image (a later issue pins dependencies and slims it further).
FROM python:3.11-slim
RUN useradd --create-home streamcrm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamcrm ./streamcrm
RUN pip install --no-cache-dir .
USER streamcrm
ENV STREAMCRM_DATA_DIR=/home/streamcrm/data
CMD ["streamcrm", "worker"]
