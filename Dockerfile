# One image for every service; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app spec_workflow \
    && mkdir -p /app/var/artifacts \
    && chown -R spec_workflow /app/var

USER spec_workflow
EXPOSE 8000
CMD ["python", "-m", "services.api"]
