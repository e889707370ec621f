#!/usr/bin/env bash
# GPU timings in one go: benchmarks/backward.py at its three sizes (64x256, 128x512, 256x1024) and
# benchmarks/train_step.py (digits DEQ MLP and the main job's conv DEQ), each writing its JSON.
# Sized to finish in under 8 minutes on one H100 (compiles included).
#
#   bash benchmarks/device_check.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu
#
# Installs what is missing, in this order:
#   - a folder .whl/ of wheels (for machines without network: ml-collections, jaxopt, ...) is
#     installed offline first;
#   - if python's jax has no GPU backend, `pip install "jax[cuda12]"` (needs the network);
#   - the project with its train extra (`pip install -e ".[train]"`), offline-safe with --no-deps
#     when its dependencies are already there.
# Fashion-MNIST for the conv step: FASHION_MNIST_DIR (default Debian's /usr/share/datasets/fashion-mnist);
# without its IDX files the conv step is skipped with a message. Peers absent from the machine
# (jaxopt, optimistix) are skipped by the benchmarks themselves.
# DEVICE_CHECK_ALLOW_CPU=1 runs it on a machine without a GPU (a dry run of the script), and
# DEVICE_CHECK_SETTINGS / DEVICE_CHECK_STEPS shrink it (defaults: the three sizes, 120 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
python=${PYTHON:-python3}
settings=${DEVICE_CHECK_SETTINGS:-64x256,128x512,256x1024}
steps=${DEVICE_CHECK_STEPS:-120}
data_dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
export PYTHONUNBUFFERED=1
mkdir -p "$out"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/device_check_site .whl/*.whl
  export PYTHONPATH=/tmp/device_check_site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$python" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  if [ "${DEVICE_CHECK_ALLOW_CPU:-0}" = 1 ]; then
    echo "no GPU: a dry run on $("$python" -c 'import jax; print(jax.default_backend())')"
  else
    echo "jax has no GPU backend here: installing jax[cuda12]"
    "$python" -m pip install -q "jax[cuda12]"
  fi
fi
if ! "$python" -c "import implicit_jax.train" 2>/dev/null; then
  "$python" -m pip install -q -e ".[train]" 2>/dev/null || "$python" -m pip install -q --no-deps --no-build-isolation -e . \
    || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$python" -c "import jax; print('jax', jax.__version__, 'on', jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

start=$SECONDS
"$python" benchmarks/backward.py --settings "$settings" --out "$out/backward.json" 2>&1 | tee "$out/backward.log"
echo "backward.py: $((SECONDS - start)) s"
start=$SECONDS
"$python" benchmarks/train_step.py --model mlp --steps "$steps" --no-peers --out "$out/train_step_mlp.json" 2>&1 | tee "$out/train_step_mlp.log"
echo "train_step.py --model mlp: $((SECONDS - start)) s"
if ls "$data_dir"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  start=$SECONDS
  "$python" benchmarks/train_step.py --model conv --steps "$steps" --data_dir "$data_dir" --out "$out/train_step_conv.json" \
    2>&1 | tee "$out/train_step_conv.log"
  echo "train_step.py --model conv: $((SECONDS - start)) s"
else
  echo "no Fashion-MNIST IDX files in $data_dir (set FASHION_MNIST_DIR): the conv train step is skipped"
fi
echo "wrote $(ls "$out" | tr '\n' ' ')to $out"
