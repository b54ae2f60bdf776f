#!/usr/bin/env bash
# The Python packages a lent GPU machine lacks, downloaded HERE (where the package index is reachable) as wheels for
# ITS Python into the repository's ignored wheels/ folder, which the device tool's `carry` brings along:
#
#     bash bench/device_wheels.sh                 # Python 3.12, manylinux x86_64: the nvidia-h200 machines
#     PYVER=3.11 bash bench/device_wheels.sh      # another Python, e.g. this machine's, to rehearse on the CPU
#
# The device image has torch, lightning, transformers, numpy, pandas, matplotlib, opencv, safetensors, einops, tqdm,
# pyyaml and scipy, but not fastcore (every infcam module needs it), PyAV (video files), diffusers (the Wan VAE),
# ftfy (prompt cleaning), DeepSpeed (a source package) or DeepSpeed's hjson and pydantic. On the device, in the
# repository root, install them into a folder of their own and put it and the checkout on the path:
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site wheels/*.whl &&
#     DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site \
#         wheels/deepspeed-*.tar.gz && export PYTHONPATH=/tmp/site:$PWD && python3 bench/gpu.py --out $OUT/gpu_check
#
# (the device tool: `carry: ["wheels"]`; about 46 MB of wheels plus the 14 MB tree stay under its 64 MiB).
# Rehearsal on the CPU: wheels for this machine's Python, a virtual environment with only what the device has
# (torch lightning transformers tokenizers sentencepiece numpy pandas matplotlib pillow pyyaml safetensors einops tqdm
# opencv-python-headless tensorboard scipy huggingface_hub regex requests psutil py-cpuinfo msgpack ninja), the two
# install lines, then `python3 bench/gpu.py --preset tiny --size 9x32x48 --out /tmp/gc`: every section must run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
mkdir -p wheels
dl() { python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
         --platform manylinux2014_x86_64 -d wheels "$@"; }
dl fastcore==1.12.47 av diffusers==0.42.1 ftfy wcwidth hjson pydantic annotated-types typing-inspection
# pydantic pins its compiled core exactly: fetch the version it names
core=$(unzip -p wheels/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p' | head -1)
dl "pydantic-core==$core"
python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary deepspeed -d wheels deepspeed
ls wheels
du -sh wheels
