# The service image: API and worker (same image, different command).
FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install --no-cache-dir .
ENV FORGE_ENVIRONMENT=production
EXPOSE 8000
CMD ["sh", "-c", "rlhf-forge db upgrade && rlhf-forge serve --host 0.0.0.0 --port 8000 --no-worker"]
