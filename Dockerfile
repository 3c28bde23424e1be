# Chronicle's image: slim, non-root, dependencies installed from pyproject.toml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 chronicle
WORKDIR /app

COPY pyproject.toml README.md ./
COPY domain ./domain
COPY infrastructure ./infrastructure
COPY projections ./projections
COPY workers ./workers
COPY schema ./schema
COPY api ./api
COPY service_layer ./service_layer
COPY cli ./cli
COPY console ./console
RUN pip install . && rm -rf /root/.cache

USER chronicle
EXPOSE 8000
CMD ["chronicle", "serve", "--host", "0.0.0.0", "--port", "8000"]
