# flux-worker: the Procfile's `python app.py` (checks settings, then execs
# gunicorn with gunicorn.conf.py) in a Python image, as a non-root user, with
# the embedded SQLite image store on the /data volume.
#
#   docker build -t flux-worker .
#   docker build --build-arg BASE_IMAGE=python:3.13-slim -t flux-worker .
#
# Any Debian-like base with `python3` and its venv module works: the official
# python:*-slim images, or Debian's python3 + python3-venv.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# PATH is spelled out rather than built on the base's $PATH, which a base made
# with `docker import` may not set at all.
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The runtime user (fixed uid/gid, so host directories can be chown'ed to it)
# and the volume's mount point, owned by it: a new named volume copies this
# ownership.
RUN groupadd --system --gid 10001 flux \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin flux \
    && mkdir -p /app /data \
    && chown 10001:10001 /data

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /app/requirements.txt
RUN python3 -m venv /opt/venv \
    && python3 -m pip install --no-cache-dir -r /app/requirements.txt

# Then the code (root-owned, read-only to the service), compiled once here.
WORKDIR /app
COPY app.py gunicorn.conf.py Procfile ./
COPY flux_worker/ ./flux_worker/
RUN python3 -m compileall -q /app

# gunicorn's worker heartbeat files on tmpfs rather than the container's
# overlay /tmp (gunicorn's advice for containers); GUNICORN_CMD_ARGS given to
# `docker run` replaces this.
ENV IMAGE_STORE_PATH=/data/images.sqlite3 \
    PORT=8000 \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm"

USER 10001:10001
VOLUME /data
EXPOSE 8000

# GET /healthz on the port gunicorn binds (PORT is expanded by the shell when
# the check runs, so `-e PORT=...` is followed). urllib: slim images have no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python3 -c "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:${PORT:-8000}/healthz', timeout=4); sys.exit(r.status != 200)" || exit 1

# Last, so a new version reuses every layer above (build args reach the cache
# key of each RUN after their ARG). Set by `--build-arg VERSION=...`
# (flux_worker/version.py has __version__).
ARG VERSION=unspecified
LABEL org.opencontainers.image.title="flux-worker" \
      org.opencontainers.image.description="OpenAI-compatible image service on Cloudflare Workers AI" \
      org.opencontainers.image.version="${VERSION}"

# The Procfile's command; app.py execs gunicorn, which becomes PID 1 and
# stops gracefully on SIGTERM (graceful_timeout is 30 s: give `docker stop`
# `-t 35` to let streams finish).
CMD ["python3", "app.py"]
