# syntax=docker/dockerfile:1
# Build stage: wheels for the project and its dependencies (binary wheels bring GDAL/PROJ).
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY changedetect ./changedetect
COPY flows ./flows
# the flows extra: the image runs a Prefect worker as well as one-off `changedetect run`s
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[flows]"

# Runtime stage: no build tools, non-root user.
FROM python:3.11.10-slim-bookworm
# libgomp1: the OpenMP runtime of LightGBM, which runs the s2cloudless cloud mask. Not pinned:
# a point release of bookworm replaces the version and a pinned one would stop the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 changedetect
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs /app/configs
COPY prefect.yaml /app/prefect.yaml
WORKDIR /work
USER 10001
ENTRYPOINT ["changedetect"]
CMD ["--help"]
