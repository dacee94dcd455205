# The isotune server image: REST API, migrations and optuna-dashboard. No torch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract contract
COPY meanfield meanfield
COPY service service
COPY migrations migrations
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir '.[service]' \
    && useradd --create-home isotune && mkdir /artifacts && chown isotune /artifacts
USER isotune
EXPOSE 8000 8080
CMD ["isotune", "serve", "--host", "0.0.0.0", "--port", "8000"]
