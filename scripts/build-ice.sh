#!/usr/bin/env bash
# Build and install zeroc-ice==3.6.5 (the Ice version omero-py requires) for
# Python 3.11, from its source release, with two small source fixes.
#
# Usage: scripts/build-ice.sh [PYTHON]     (default PYTHON=python3;
#        normally the project venv's interpreter, e.g. .venv/bin/python)
#
# Why: PyPI has no zeroc-ice 3.6.5 wheel for Python 3.11, and the sdist does
# not compile there as shipped:
#   * src/Slice.cpp includes <eval.h>, which Python 3.11 removed (folded into
#     Python.h)  -> the include is dropped;
#   * src/Util.cpp reads PyThreadState_GET()->frame, a field that no longer
#     exists in 3.11  -> replaced by the public PyEval_GetFrame().
#
# Idempotent: the built wheel is cached in build/wheels/ (repo root) and reused
# when it matches the interpreter; installing is skipped when `import Ice`
# already reports 3.6.5. Needs gcc/g++, the Python headers, and the OpenSSL and
# bzip2 development headers (installed with apt-get when missing and possible).
set -euo pipefail

ICE_VERSION=3.6.5
PYTHON=${1:-python3}

log() { echo "build-ice: $*"; }
die() { echo "build-ice: ERROR: $*" >&2; exit 1; }
trap 'echo "build-ice: ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR="$REPO_ROOT/build"
WHEEL_DIR="$BUILD_DIR/wheels"
SRC_DIR="$BUILD_DIR/ice-src"

command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') \
    || die "'$PYTHON' does not run"
log "using $PYTHON (Python $PY_VERSION)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' is not available"

# Already installed? ---------------------------------------------------------
installed_ice_version() {
    "$PYTHON" -c 'import Ice; print(Ice.stringVersion())' 2>/dev/null || true
}
if [ "$(installed_ice_version)" = "$ICE_VERSION" ]; then
    log "Ice $ICE_VERSION is already importable by $PYTHON; nothing to do"
    exit 0
fi

# Find a cached wheel whose tags this interpreter supports --------------------
find_cached_wheel() {
    "$PYTHON" - "$WHEEL_DIR" "$ICE_VERSION" <<'EOF'
import glob, os, sys, sysconfig
wheel_dir, version = sys.argv[1], sys.argv[2]
try:
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
    supported = set(sys_tags())
    def ok(path):
        try:
            return bool(parse_wheel_filename(os.path.basename(path))[3] & supported)
        except Exception:
            return False
except Exception:  # pip internals moved: fall back to the plain CPython tag
    py = "cp%d%d" % sys.version_info[:2]
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    def ok(path):
        return os.path.basename(path).endswith("-%s-%s-%s.whl" % (py, py, plat))
for path in sorted(glob.glob(os.path.join(wheel_dir, "zeroc_ice-%s-*.whl" % version))):
    if ok(path):
        print(path)
        break
EOF
}

mkdir -p "$WHEEL_DIR"
WHEEL=$(find_cached_wheel) || die "could not inspect the wheel cache ${WHEEL_DIR#"$REPO_ROOT"/}"

if [ -n "$WHEEL" ]; then
    log "cached wheel found: ${WHEEL#"$REPO_ROOT"/}; skipping build"
else
    log "no cached zeroc-ice $ICE_VERSION wheel for this interpreter; building one"

    # Build prerequisites ------------------------------------------------------
    for tool in gcc g++; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required to build zeroc-ice (apt-get install build-essential)"
    done
    "$PYTHON" - <<'EOF' || die "Python development headers (Python.h) not found for $PYTHON (apt-get install python3-dev)"
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
    missing=()
    for pkg in libssl-dev libbz2-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null 2>&1 || die "missing build dependencies: ${missing[*]} (and no apt-get to install them)"
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || die "missing build dependencies: ${missing[*]}; run as root or install them"
            SUDO="sudo"
        fi
        log "installing missing Debian packages: ${missing[*]}"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            || die "apt-get update failed"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            || die "apt-get install ${missing[*]} failed"
    fi

    # Source release -------------------------------------------------------------
    mkdir -p "$SRC_DIR"
    SDIST="$SRC_DIR/zeroc-ice-$ICE_VERSION.tar.gz"
    if [ -f "$SDIST" ]; then
        log "using downloaded source release ${SDIST#"$REPO_ROOT"/}"
    else
        log "downloading the zeroc-ice $ICE_VERSION source release"
        "$PYTHON" -m pip download --no-deps --no-binary :all: "zeroc-ice==$ICE_VERSION" -d "$SRC_DIR" \
            || die "could not download the zeroc-ice $ICE_VERSION source release"
        [ -f "$SDIST" ] || die "download did not produce $SDIST"
    fi

    WORK=$(mktemp -d "$BUILD_DIR/ice-build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    tar -xzf "$SDIST" -C "$WORK" || die "could not unpack $SDIST"
    SRC="$WORK/zeroc-ice-$ICE_VERSION"
    [ -f "$SRC/setup.py" ] || die "unexpected sdist layout: no $SRC/setup.py"

    # Source fixes for Python 3.11 -------------------------------------------------
    # patch FILE PATTERN(ERE, must match) SED-EXPR GONE-PATTERN(ERE, must not match after)
    patch_src() {
        local file="$SRC/$1" pattern=$2 expr=$3 gone=$4
        grep -Eq -e "$pattern" "$file" || die "fix for $1: pattern '$pattern' not found (different source release?)"
        sed -E -i "$expr" "$file"
        if grep -Eq -e "$gone" "$file"; then die "fix for $1 did not apply"; fi
        log "patched $1"
    }
    # Python 3.11 removed eval.h (its declarations live in Python.h).
    patch_src src/Slice.cpp \
        '^#include <eval\.h>' \
        's|^#include <eval\.h>|// #include <eval.h>  (removed in Python 3.11; part of Python.h)|' \
        '^#include <eval\.h>'
    # PyThreadState has no 'frame' member in Python 3.11; use the public API.
    patch_src src/Util.cpp \
        'PyThreadState_GET\(\)->frame' \
        's|PyThreadState_GET\(\)->frame|PyEval_GetFrame()|' \
        '->frame'

    # Build ------------------------------------------------------------------------
    # The single extension module has ~230 C/C++ files, which distutils compiles
    # one at a time (build_ext's "parallel" only spreads separate extensions).
    # Make setup.py compile them on every core. Build speed only: if distutils'
    # internals ever differ, the hook falls back to the serial compile.
    jobs=${ICE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
    grep -q '^from distutils.extension import Extension$' "$SRC/setup.py" \
        || die "setup.py: anchor line for the parallel-compile hook not found"
    cat > "$WORK/parallel_compile.py" <<'PYEOF'
# --- added by scripts/build-ice.sh: compile the sources in parallel ---
def _ice_parallel_compile_hook():
    import os
    from concurrent.futures import ThreadPoolExecutor
    import distutils.ccompiler as ccompiler
    serial = ccompiler.CCompiler.compile
    jobs = int(os.environ.get("ICE_BUILD_JOBS", "1"))

    def compile(self, sources, output_dir=None, macros=None, include_dirs=None,
                debug=0, extra_preargs=None, extra_postargs=None, depends=None):
        try:
            macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
                output_dir, macros, include_dirs, sources, depends, extra_postargs)
            cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)
        except AttributeError:
            return serial(self, sources, output_dir, macros, include_dirs, debug,
                          extra_preargs, extra_postargs, depends)

        def one(obj):
            if obj in build:
                src, ext = build[obj]
                self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(max(jobs, 1)) as pool:
            list(pool.map(one, objects))
        return objects

    if jobs > 1:
        ccompiler.CCompiler.compile = compile
_ice_parallel_compile_hook()
# --- end of build-ice.sh addition ---
PYEOF
    sed -i "/^from distutils.extension import Extension\$/r $WORK/parallel_compile.py" "$SRC/setup.py"
    grep -q '^_ice_parallel_compile_hook()' "$SRC/setup.py" \
        || die "could not add the parallel-compile hook to setup.py"
    export ICE_BUILD_JOBS=$jobs
    # Build isolation gives the legacy setup.py the setuptools + wheel it needs
    # regardless of what the target environment has installed (--use-pep517: a
    # pip before 23.1, such as Debian bookworm's in a new venv, would otherwise
    # run setup.py in that environment, which has no wheel). setuptools is
    # capped at the newest release this build was verified with (the setup.py
    # still imports distutils, which setuptools provides as a shim).
    CONSTRAINTS="$WORK/build-constraints.txt"
    echo 'setuptools<85' > "$CONSTRAINTS"
    log "compiling zeroc-ice $ICE_VERSION with $jobs parallel jobs (takes several minutes)"
    start=$(date +%s)
    PIP_CONSTRAINT="$CONSTRAINTS" "$PYTHON" -m pip wheel --no-deps --use-pep517 -w "$WHEEL_DIR" "$SRC" \
        || die "building the zeroc-ice wheel failed (see the compiler output above)"
    log "build finished in $(( $(date +%s) - start ))s"

    WHEEL=$(find_cached_wheel) || die "could not inspect the wheel cache"
    [ -n "$WHEEL" ] || die "build succeeded but no matching zeroc_ice-$ICE_VERSION wheel is in ${WHEEL_DIR#"$REPO_ROOT"/}"
    log "built ${WHEEL#"$REPO_ROOT"/}"
fi

# Install ------------------------------------------------------------------------
log "installing ${WHEEL#"$REPO_ROOT"/} into $PYTHON"
"$PYTHON" -m pip install --no-deps --force-reinstall "$WHEEL" || die "pip install of $WHEEL failed"
got=$(installed_ice_version)
[ "$got" = "$ICE_VERSION" ] || die "after install, 'import Ice' reports '${got:-nothing}' instead of $ICE_VERSION"
log "Ice $got installed and importable"
