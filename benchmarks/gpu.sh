#!/usr/bin/env bash
# The GPU figures of reports/benchmarks.md, in one command on any CUDA machine:
#
#     bash benchmarks/gpu.sh [ARCHIVE] [run.py options: --no-compile, --repeats N, --out MD]
#
# Times whole epochs of the `cifar10` profile (all 50,000 CIFAR-10 training images, CIFAR
# ResNet-18, batch 512): our loop with the profile's defaults and with torch.compile, beside
# main_simsiam.py's DataLoader loop over the JPEGs; where each epoch's time goes (the step
# alone, our augmentation alone, the time blocked on the DataLoader); and `pretrain` itself.
# Writes them into reports/benchmarks.md and .json, GPU named, beside the sections measured on
# a CPU (left as they are), and prints them. Expect a few minutes on one H100, most of it
# compiling; --no-compile leaves that row out.
#
# Data: ARCHIVE, else $SIMSIAM_DATA, else .gpu/cifar10-jpeg.tar.gz, else
# ../shared/datasets/cifar10-jpeg.tar.gz; extracted and prepared in a temporary directory
# ($TMPDIR), removed at the end.
# Python: $PYTHON, else .venv/bin/python if it sees a GPU, else python3; the library is
# imported from src/ where it is not installed.
# A machine with no package index (a bare CUDA image may lack jsonschema and its dependencies):
# first run `bash benchmarks/gpu.sh --stage` where pip reaches an index and the archive is at
# hand; it fills .gpu/ (git-ignored) with those wheels, for the GPU machine's Python
# ($GPU_PYTHON_VERSION, default 3.12, x86-64), and a copy of the archive: take .gpu/ along.
# `bash benchmarks/gpu.sh --cpu [ARCHIVE] --out MD` checks this script where no GPU is: the same
# steps on a CPU, at the reduced scale tests use (its figures are not the GPU's; give --out).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAGE=$ROOT/.gpu
ARCHIVE_NAME=cifar10-jpeg.tar.gz
# The library's dependencies that the epoch benchmark imports, as distribution:module.
DEPS="jsonschema:jsonschema jsonschema-specifications:jsonschema_specifications
referencing:referencing rpds-py:rpds attrs:attrs typing-extensions:typing_extensions
pyyaml:yaml jinja2:jinja2 markupsafe:markupsafe filelock:filelock tqdm:tqdm numpy:numpy
pillow:PIL"

default_archive() {
    for a in "${SIMSIAM_DATA:-}" "$STAGE/$ARCHIVE_NAME" "$ROOT/../shared/datasets/$ARCHIVE_NAME"; do
        if [[ -n $a && -e $a ]]; then echo "$a"; return; fi
    done
}

if [[ ${1:-} == --stage ]]; then
    py=${PYTHON:-python3}
    mkdir -p "$STAGE/wheels"
    # Pure-Python wheels, and rpds-py's binary one, at the versions installed here if any.
    reqs=()
    for dist in jsonschema jsonschema-specifications referencing rpds-py attrs typing-extensions; do
        v=$("$py" -m pip show "$dist" 2>/dev/null | awk '/^Version:/ {print $2}')
        reqs+=("$dist${v:+==$v}")
    done
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$p")
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "${GPU_PYTHON_VERSION:-3.12}" "${platforms[@]}" \
        -d "$STAGE/wheels" "${reqs[@]}"
    archive=${2:-$(default_archive)}
    if [[ -n $archive && ! -e $STAGE/$ARCHIVE_NAME ]]; then cp "$archive" "$STAGE/$ARCHIVE_NAME"; fi
    ls -l "$STAGE" "$STAGE/wheels"
    echo "staged: take $STAGE along, then run bash benchmarks/gpu.sh on the GPU machine"
    exit 0
fi

DEVICE=cuda
if [[ ${1:-} == --cpu ]]; then
    DEVICE=cpu
    shift
fi
sees_cuda() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }
CUDA_SEEN=
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    if [[ -x .venv/bin/python ]] && sees_cuda .venv/bin/python; then
        PYTHON=.venv/bin/python CUDA_SEEN=1
    elif [[ $DEVICE == cpu && -x .venv/bin/python ]]; then
        PYTHON=.venv/bin/python
    fi
fi
if [[ $DEVICE == cuda && -z $CUDA_SEEN ]] && ! sees_cuda "$PYTHON"; then
    seen=$("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1 || true)
    echo "gpu.sh: no CUDA device visible to $PYTHON ($seen): the GPU figures need one" >&2
    exit 1
fi

missing() { # the distributions of DEPS whose module does not import
    for pair in $DEPS; do
        "$PYTHON" -c "import ${pair#*:}" 2>/dev/null || printf '%s ' "${pair%%:*}"
    done
}
SITE=
need=$(missing)
if [[ -n $need ]]; then
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/simsiam-gpu-site.XXXXXX")
    wheels=()
    for dist in $need; do
        w=$(find "$STAGE/wheels" -maxdepth 1 -iname "${dist//-/_}-*.whl" 2>/dev/null | head -1)
        if [[ -n $w ]]; then wheels+=("$w"); fi
    done
    if ((${#wheels[@]})); then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
    else
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install -q --target "$SITE" $need >/dev/null 2>&1 || true
    fi
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    need=$(missing)
    if [[ -n $need ]]; then
        echo "gpu.sh: $PYTHON lacks $need; where pip reaches an index, run" \
            "'bash benchmarks/gpu.sh --stage' and take .gpu/ along (or pip install them)" >&2
        exit 1
    fi
fi
if ! "$PYTHON" -c 'import simsiam_lab' 2>/dev/null; then
    export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
fi

ARCHIVE=
if [[ $# -gt 0 && $1 != -* ]]; then
    ARCHIVE=$1
    shift
fi
ARCHIVE=${ARCHIVE:-$(default_archive)}
if [[ -z $ARCHIVE || ! -e $ARCHIVE ]]; then
    echo "gpu.sh: no CIFAR-10 archive ($ARCHIVE_NAME): pass its path, set SIMSIAM_DATA," \
        "or put it in .gpu/" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/simsiam-gpu.XXXXXX")
trap 'rm -rf "$WORK" ${SITE:+"$SITE"}' EXIT
echo "gpu.sh: $PYTHON on $DEVICE (run.py names the machine); data $ARCHIVE"
# run.py prints each figure as it comes, then the report's GPU section and the report's path;
# its last line, the JSON, is in reports/benchmarks.json.
PYTHONUNBUFFERED=1 "$PYTHON" benchmarks/run.py --epoch --device "$DEVICE" --data "$ARCHIVE" \
    --workdir "$WORK" "$@" | grep --line-buffered -v '^{"'
