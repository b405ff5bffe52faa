# omero-adi: the import daemon with omero-py (Ice 3.6), the OMERO command-line
# importer (Java) and rootless Podman for preprocessing containers.
#
#   docker build -t omero-adi .      (or: docker compose build omeroadi)
#
# Run it privileged, with /dev/fuse and label=disable, as docker-compose.yml does.
# Not built on the development machine (it has no Docker engine): see
# docs/operations.md.

# --- zeroc-ice 3.6.5 for Python 3.11 (no wheel on PyPI; two source fixes) ---------
FROM python:3.11-slim-bookworm AS ice
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libssl-dev libbz2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build-ice.sh scripts/build-ice.sh
RUN scripts/build-ice.sh python

# --- the daemon -------------------------------------------------------------------
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMERO_USERDIR=/opt/omero \
    XDG_RUNTIME_DIR=/run/user/1000

# man1 must exist for the JRE's post-install step on slim images.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        podman runc fuse-overlayfs uidmap openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 adi \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash adi \
    && mkdir -p /app/config /app/logs /app/tests /data /OMERO /opt/omero \
        /run/user/1000 /home/adi/.config/containers /home/adi/.local/share/containers
COPY deploy/subuid /etc/subuid
COPY deploy/subgid /etc/subgid
COPY deploy/containers.conf /etc/containers/containers.conf
COPY deploy/storage.conf /home/adi/.config/containers/storage.conf

COPY --from=ice /src/build/wheels/ /tmp/wheels/
WORKDIR /app
COPY pyproject.toml README.md ./
COPY omero_adi omero_adi
COPY migrations migrations
RUN pip install /tmp/wheels/zeroc_ice-3.6.5-*.whl \
    && pip install '.[omero,podman,zarr,metrics]' \
    && rm -rf /tmp/wheels build *.egg-info
COPY deploy/settings.yml config/settings.yml
COPY tests/system_check.py tests/

RUN chown -R adi:adi /app /opt/omero /run/user/1000 /home/adi
USER 1000:1000
# The importer's Java libraries (OMERO.java), fetched now instead of at the first import.
RUN omero import --fetch-jars latest

VOLUME ["/data", "/OMERO", "/app/logs", "/home/adi/.local/share/containers"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "omero_adi.metrics"]
ENTRYPOINT ["python", "-m", "omero_adi.main"]
