#!/usr/bin/env bash
# The book's two commands, each setting itself up from nothing:
#   bash scripts/book.sh site   -> builds the site into _build/html (warnings are errors)
#   bash scripts/book.sh test   -> ruff, unit tests, nbval over notebooks/ (quick profile), site build and browser tests
# Set-up: a virtual environment in .venv with the pinned torch/torchvision pair (constraints.txt)
# and this package with its extras, and the browser assets the site serves itself (MathJax, the
# ipywidgets manager: `npm ci`, package-lock.json). Re-runs skip the installs while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ACCELBOOK_VENV:-.venv}

setup() {
    local stamp="$VENV/.accelbook-installed" want
    want=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --constraint constraints.txt -e ".[book]"
    echo "$want" > "$stamp"
    assets
}

assets() {  # npm ci -> node_modules, and (postinstall) the copies in book/_static/vendor/
    local stamp=book/_static/vendor/.installed want
    want=$(cat package.json package-lock.json scripts/vendor-assets.mjs | sha256sum | cut -c1-16)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    if ! command -v npm >/dev/null; then
        echo "npm (Node.js 18 or newer) is needed to install the site's MathJax and widget assets" >&2
        exit 1
    fi
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
}

build() {
    assets
    # Sphinx copies book/_static/ only when some page is out of date: rebuild everything when a static
    # file (CSS, JS, the vendored assets) is newer than the last build, so the site never serves old ones.
    local all=()
    if [[ -f _build/html/index.html && -n "$(find book/_static -type f -newer _build/html/index.html -print -quit)" ]]; then
        all=(--all)
    fi
    "$VENV/bin/jupyter-book" build . --warningiserror --nitpick --keep-going "${all[@]}" "$@"
}

case "${1:-}" in
    site)
        setup
        build
        echo "Site built: _build/html/index.html"
        ;;
    test)
        setup
        "$VENV/bin/ruff" check src tests scripts   # the linter first (pyproject.toml's [tool.ruff])
        # --nbval: the root conftest.py selects the quick profile unless ACCELBOOK_QUICK is set.
        # pytest-xdist: the whole suite runs one worker per core (at most 4), each test file or chapter whole
        # on one worker (nbval's cells share a kernel), torch in each on its share of the cores. A run of
        # chosen files (extra arguments) stays in one process; ACCELBOOK_TEST_JOBS=N sets the workers.
        cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN || echo 1)
        jobs=${ACCELBOOK_TEST_JOBS:-$(( $# > 1 ? 0 : (cores < 4 ? cores : 4) ))}
        if [[ ! "$jobs" =~ ^[0-9]+$ ]]; then
            echo "ACCELBOOK_TEST_JOBS must be a whole number (0: one process), not '$jobs'" >&2
            exit 2
        fi
        workers=()
        if (( jobs > 1 )); then
            workers=(--numprocesses "$jobs" --dist loadfile)
            export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}
        fi
        "$VENV/bin/python" -m pytest --nbval "${workers[@]}" "${@:2}"
        ;;
    build)  # the site build alone, for tests that already run inside the environment
        build "${@:2}"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: bash scripts/book.sh {site|test|setup|build}" >&2
        exit 2
        ;;
esac
