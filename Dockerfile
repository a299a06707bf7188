# The service image: API and worker (same image, different command).
FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY trainer ./trainer
COPY migrations ./migrations
# EXTRAS="[local-llm]" builds the image of the optional local model server (adds torch)
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS}"
ENV FORGE_ENVIRONMENT=production
EXPOSE 8000
CMD ["sh", "-c", "rlhf-forge db upgrade && rlhf-forge serve --host 0.0.0.0 --port 8000 --no-worker"]
