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
RUN useradd --create-home --uid 10001 changedetect
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs /app/configs
COPY prefect.yaml /app/prefect.yaml
WORKDIR /work
USER 10001
ENTRYPOINT ["changedetect"]
CMD ["--help"]
