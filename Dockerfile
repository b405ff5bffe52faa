# omero-adi: the import daemon with omero-py (Ice 3.6), the OMERO command-line
# importer (Java) and rootless Podman for preprocessing containers.
#
#   docker build -t omero-adi:local .          (or: docker compose build omeroadi)
#   docker build --build-arg OMERO_JARS=skip …  offline: without the OMERO.java jars
#
# Python is Debian bookworm's own (3.11) in a virtualenv at /opt/venv, so the base is
# plain debian:bookworm-slim, which scripts/build-image can also make from Debian's
# packages where no registry is reachable. Layout as the earlier ADI image: files in
# /auto-importer, settings in config/settings.yml, logs in logs/, health checks in
# tests/, user and group 1000. How to build, run and verify it: docs/operations.md.

# --- zeroc-ice 3.6.5 for Python 3.11 (no wheel on PyPI; two source fixes) ---------
# A wheel that scripts/build-ice.sh already built (build/wheels/ in the context) is
# used as it is; without one the wheel is compiled here.
FROM debian:bookworm-slim AS ice
WORKDIR /src
COPY scripts/build-ice.sh build/wheels/zeroc_ice-3.6.5-cp311-*.whl scripts/
ARG PIP_CERT
RUN if ls scripts/zeroc_ice-*.whl >/dev/null 2>&1; then \
        mkdir -p build/wheels && mv scripts/zeroc_ice-*.whl build/wheels/; \
    else \
        apt-get update \
        && apt-get install -y --no-install-recommends python3-dev python3-venv \
            build-essential libssl-dev libbz2-dev \
        && rm -rf /var/lib/apt/lists/* \
        && python3 -m venv /opt/venv && scripts/build-ice.sh /opt/venv/bin/python; \
    fi

# --- the daemon -------------------------------------------------------------------
FROM debian:bookworm-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMERO_USERDIR=/opt/omero \
    XDG_RUNTIME_DIR=/run/user/1000

# man1 must exist for the JRE's post-install step on slim images.
# newuidmap/newgidmap get file capabilities instead of setuid root: run setuid, they
# open uid_map as root, and the kernel then wants CAP_SYS_ADMIN, which an
# unprivileged container lacks; with file capabilities they stay uid 1000, the owner
# of the new user namespace (docs/operations.md, "Preprocessing in the container").
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
        podman runc fuse-overlayfs uidmap libcap2-bin openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && chmod 0755 /usr/bin/newuidmap /usr/bin/newgidmap \
    && setcap cap_setuid=ep /usr/bin/newuidmap \
    && setcap cap_setgid=ep /usr/bin/newgidmap \
    && python3 -m venv /opt/venv

RUN groupadd --gid 1000 adi \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash adi \
    && mkdir -p /auto-importer/config /auto-importer/logs /auto-importer/tests \
        /data /OMERO /opt/omero /run/user/1000 \
        /home/adi/.config/containers /home/adi/.local/share/containers \
    && chown -R 1000:1000 /auto-importer /opt/omero /run/user/1000 /home/adi \
    && chmod 0700 /run/user/1000

# Dependencies first: a change to the source does not reinstall them.
COPY --from=ice /src/build/wheels/ /tmp/wheels/
COPY pyproject.toml /tmp/omero-adi/
ARG PIP_CERT
RUN pip install /tmp/wheels/zeroc_ice-3.6.5-*.whl \
    && python -c 'import tomllib; p = tomllib.load(open("/tmp/omero-adi/pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + [d for k in ("omero", "podman", "zarr", "metrics") for d in p["optional-dependencies"][k]]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm -rf /tmp/wheels /tmp/omero-adi /tmp/requirements.txt

# The importer's Java libraries (OMERO.java), fetched now instead of at the first
# import; OMERO_JARS=skip leaves them out (the daemon then says so at every import).
ARG OMERO_JARS=fetch
LABEL org.omero-adi.omero-jars=$OMERO_JARS
USER 1000:1000
RUN if [ "$OMERO_JARS" = fetch ]; then omero import --fetch-jars latest; \
    else echo "OMERO_JARS=$OMERO_JARS: the OMERO.java jars are not in this image"; fi
USER root

COPY deploy/subuid /etc/subuid
COPY deploy/subgid /etc/subgid
COPY deploy/containers.conf /etc/containers/containers.conf
COPY --chown=1000:1000 deploy/storage.conf /home/adi/.config/containers/storage.conf

# The package, installed (never imported from a source tree in the working directory).
COPY pyproject.toml README.md /tmp/omero-adi/
COPY omero_adi /tmp/omero-adi/omero_adi
COPY migrations /tmp/omero-adi/migrations
COPY biomero_importer /tmp/omero-adi/biomero_importer
RUN pip install --no-deps /tmp/omero-adi && rm -rf /tmp/omero-adi

WORKDIR /auto-importer
COPY --chown=1000:1000 deploy/settings.yml config/settings.yml
COPY --chown=1000:1000 tests/system_check.py tests/t_main.py tests/*.tif tests/
USER 1000:1000

VOLUME ["/data", "/OMERO", "/auto-importer/logs", "/home/adi/.local/share/containers"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "omero_adi.metrics"]
ENTRYPOINT ["python", "-m", "omero_adi.main"]
