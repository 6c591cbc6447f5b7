#!/bin/sh
# The flight install on JetPack 6.1 / 6.2 (L4T r36.4, Python 3.10, CUDA 12.6, TensorRT 10.3):
# one recipe for a bare Jetson and for the container (deploy/Dockerfile runs this script).
#
#   sudo deploy/install-jetson.sh [SOURCE] [VENV]
#
# SOURCE: what pip installs (default: this checkout); VENV: default /opt/onboard/venv.
# Only the flight dependencies: numpy, onnxruntime-gpu, pyserial and the wire libraries,
# cuda-python. No torch, no scipy (pyproject.toml's core dependencies; the extras stay out).
set -eu
SOURCE=${1:-$(dirname "$0")/..}
VENV=${2:-/opt/onboard/venv}
# NVIDIA's Jetson AI Lab package index: onnxruntime-gpu built for JetPack 6 (CUDA 12.6, cuDNN 9,
# TensorRT 10.3; aarch64, cp310). PyPI has no onnxruntime-gpu for aarch64.
JETSON_INDEX=${JETSON_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}

# TensorRT's Python module comes from JetPack (python3-libnvinfer, in /usr/lib/python3.10/
# dist-packages): the venv sees it through --system-site-packages; its own packages come first.
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --no-cache-dir --upgrade pip
# cuda-python 12.x for CUDA 12.6 (13.x wants a CUDA 13 driver)
"$VENV/bin/pip" install --no-cache-dir "$SOURCE[jetson]" "cuda-python>=12.6,<13"
# pyproject asks for onnxruntime (the CPU wheel on PyPI, also on aarch64): replace it with the
# GPU build. Both install the same `onnxruntime` package, so the CPU one goes first.
"$VENV/bin/pip" uninstall -y onnxruntime
"$VENV/bin/pip" install --no-cache-dir --index-url "$JETSON_INDEX" --extra-index-url https://pypi.org/simple onnxruntime-gpu
"$VENV/bin/python" -c "import onnxruntime as o; p = o.get_available_providers(); print('onnxruntime', o.__version__, p); assert 'TensorrtExecutionProvider' in p, p"
