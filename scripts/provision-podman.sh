#!/usr/bin/env bash
# Make real (rootful) Podman usable for tests on this sandboxed Debian 12 host.
#
# Idempotent: every step checks first and does nothing when already done.
#
#   scripts/provision-podman.sh                    install + configure + base image + verify
#   scripts/provision-podman.sh --service SOCK     ... and make sure a Podman API service
#                                                  answers on unix://SOCK (prints the URL)
#   scripts/provision-podman.sh --no-verify [...]  skip the smoke-test containers
#
# Progress goes to stderr (prefixed "provision-podman:"); with --service the only
# line on stdout is the socket URL, so `URL=$(scripts/provision-podman.sh --service S)`
# works.
#
# What this host needs (found by experiment, podman 4.3.1 from Debian 12):
#   * default_ulimits nofile AND nproc: podman's defaults (nofile=1048576, nproc=max)
#     exceed the host hard limits and the sandbox lacks CAP_SYS_RESOURCE, so runc fails
#     with "error setting rlimit type 7/6: operation not permitted".
#     (nproc is counted per host uid: containers running as uid 0 share the limit with
#     every root process on the host, ~100 here.)
#   * runtime = "runc": crun fails here ("cgroups in hybrid mode not supported, drop all
#     controllers from cgroupv2"); Debian's podman would pick crun if it got installed.
#   Not needed (podman already picks them here): cgroup_manager is cgroupfs (no systemd
#   as PID 1), events_logger is file, storage driver is the kernel's overlay.
#   --userns=keep-id does NOT work rootful ("keep-id is only supported in rootless mode");
#   use --user UID:GID (or --uidmap/--gidmap) instead.
#   `podman build` of a Containerfile starting `FROM localhost/adi-busybox:latest`
#   (with RUN and COPY steps) works offline: the local image satisfies the pull policy.
set -euo pipefail

BASE_IMAGE="localhost/adi-busybox:latest"
CONF_FILE="/etc/containers/containers.conf"
PACKAGES=(podman runc busybox-static)

log() { printf 'provision-podman: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
}

SERVICE_SOCK=""
VERIFY=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --service)
            [[ $# -ge 2 && -n "$2" ]] || die "--service needs a socket path"
            SERVICE_SOCK="$2"; shift 2 ;;
        --service=*)
            SERVICE_SOCK="${1#--service=}"; shift ;;
        --no-verify)
            VERIFY=0; shift ;;
        -h|--help)
            usage; exit 0 ;;
        *)
            usage; die "unknown argument: $1" ;;
    esac
done
if [[ -n "$SERVICE_SOCK" ]]; then
    SERVICE_SOCK="${SERVICE_SOCK#unix://}"
    [[ "$SERVICE_SOCK" == /* ]] || SERVICE_SOCK="$PWD/$SERVICE_SOCK"
fi

[[ "$(id -u)" -eq 0 ]] || die "must run as root (rootful podman is what works here)"

# --- 1. packages --------------------------------------------------------------
pkg_installed() {
    # dpkg -s succeeds for removed-but-not-purged packages too, so read the status
    # (and avoid `dpkg -s | grep -q`: SIGPIPE + pipefail makes that flaky).
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [[ -n "$SERVICE_SOCK" ]] && ! command -v curl >/dev/null 2>&1; then
        missing+=(curl)
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "packages present: ${PACKAGES[*]}"
        return
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q "${missing[@]}" >&2
    command -v podman >/dev/null || die "podman not on PATH after install"
    command -v runc >/dev/null || die "runc not on PATH after install"
}

# --- 2. containers.conf -------------------------------------------------------
write_conf() {
    local want
    want='# Written by scripts/provision-podman.sh (omero-adi) -- rewritten when it differs.
[containers]
# podman defaults (nofile=1048576, nproc=max) exceed this sandbox'"'"'s hard limits and
# raising rlimits is refused (no CAP_SYS_RESOURCE): runc fails to start anything.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
# crun fails here (hybrid cgroup v1/v2); runc works.
runtime = "runc"
'
    mkdir -p "$(dirname "$CONF_FILE")"
    if [[ -f "$CONF_FILE" ]] && [[ "$(cat "$CONF_FILE")"$'\n' == "$want" ]]; then
        log "$CONF_FILE up to date"
        return
    fi
    local tmp
    tmp="$(mktemp "${CONF_FILE}.XXXXXX")"
    printf '%s' "$want" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONF_FILE"
    log "wrote $CONF_FILE"
    CONF_CHANGED=1
}

# --- 3. base image ------------------------------------------------------------
build_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        log "image $BASE_IMAGE present"
        return
    fi
    local bb work root
    bb="$(command -v busybox || true)"
    [[ -n "$bb" ]] || die "busybox not found (busybox-static not installed?)"
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; need busybox-static"
    fi
    work="$(mktemp -d /tmp/adi-busybox-rootfs.XXXXXX)"
    CLEANUP+=("$work")
    root="$work/rootfs"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/tmp}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"
    install -m 0755 "$bb" "$root/bin/busybox"
    # One symlink per applet, at the path busybox itself would install it
    # (same as `busybox --install -s`, but without needing to chroot).
    local applet
    while IFS= read -r applet; do
        [[ -n "$applet" && "$applet" != "bin/busybox" && "$applet" == */* ]] || continue
        [[ -e "$root/$applet" || -L "$root/$applet" ]] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /bin/busybox "$root/$applet"
    done < <("$root/bin/busybox" --list-full)
    for applet in sh cat echo mkdir cp sleep ls env; do
        [[ -e "$root/bin/$applet" || -e "$root/usr/bin/$applet" ]] \
            || die "busybox lacks applet $applet"
    done
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C "$root" -cf "$work/rootfs.tar" .
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/sh"]' \
        "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE ($(du -h "$work/rootfs.tar" | cut -f1) rootfs)"
}

# --- 4. verify ----------------------------------------------------------------
verify() {
    local out tmpd
    out="$(podman run --rm "$BASE_IMAGE" sh -c 'echo ok')" \
        || die "podman run failed"
    [[ "$out" == "ok" ]] || die "podman run printed '$out', expected 'ok'"
    log "verify: podman run ok"

    tmpd="$(mktemp -d /tmp/provision-podman-verify.XXXXXX)"
    CLEANUP+=("$tmpd")
    echo in >"$tmpd/in.txt"
    out="$(podman run --rm -v "$tmpd:/data" "$BASE_IMAGE" \
        sh -c 'cat /data/in.txt && echo out >/data/out.txt')" \
        || die "podman run with bind mount failed"
    [[ "$out" == "in" && "$(cat "$tmpd/out.txt" 2>/dev/null)" == "out" ]] \
        || die "bind mount round trip failed"
    log "verify: bind mount ok"

    # Informational only: rootful podman 4.x refuses keep-id.
    local err
    if err="$(podman run --rm --userns=keep-id "$BASE_IMAGE" true 2>&1)"; then
        log "verify: --userns=keep-id works"
    else
        log "verify: --userns=keep-id unavailable (${err##*Error: }); use --user UID:GID"
    fi
}

# --- 5. API service -----------------------------------------------------------
sock_answers() {
    [[ -S "$1" ]] && curl -fsS --max-time 2 --unix-socket "$1" \
        http://d/v4.0.0/libpod/_ping >/dev/null 2>&1
}

ensure_service() {
    local sock="$1" url="unix://$1"
    if sock_answers "$sock"; then
        if [[ "${CONF_CHANGED:-0}" == 1 ]]; then
            log "WARNING: service on $sock predates the new $CONF_FILE; restart it"
        fi
        log "service already answering on $url"
        printf '%s\n' "$url"
        return
    fi
    mkdir -p "$(dirname "$sock")"
    [[ -e "$sock" || -L "$sock" ]] && rm -f "$sock"   # stale socket, nothing listening
    log "starting podman system service on $url (log ${sock}.log)"
    # Fully detached: own session, no inherited stdio, so $(...) callers don't hang.
    setsid podman system service --time=0 "$url" \
        </dev/null >"${sock}.log" 2>&1 &
    local pid=$!
    echo "$pid" >"${sock}.pid"
    local deadline=$((SECONDS + ${PODMAN_SERVICE_TIMEOUT:-30}))
    until sock_answers "$sock"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "${sock}.log" >&2 || true
            die "podman system service exited early"
        fi
        ((SECONDS < deadline)) || {
            kill "$pid" 2>/dev/null || true
            die "podman system service did not answer on $sock in time"
        }
        sleep 0.2
    done
    log "service answering on $url (pid $pid)"
    printf '%s\n' "$url"
}

# --- main ---------------------------------------------------------------------
CONF_CHANGED=0
CLEANUP=()
cleanup() { [[ ${#CLEANUP[@]} -eq 0 ]] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT
ensure_packages
write_conf
log "$(podman --version)"
build_base_image
if [[ "$VERIFY" == 1 ]]; then
    verify
fi
if [[ -n "$SERVICE_SOCK" ]]; then
    ensure_service "$SERVICE_SOCK"
fi
log "done"
