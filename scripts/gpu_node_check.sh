#!/bin/bash
# On a GPU node with no network (as for scripts/gpu_proof.py): the accelerator detection
# with a real driver, an environment over the base from a wheelhouse, doctor (timed, and
# --import), kboot run and list. Needs: .whl/ (wheels of kboot's dependencies the base
# lacks) and .gpu/jax-gpu (a wheelhouse made with kboot lock --base-packages + download).
# OUT: a folder for the results. Usage: OUT=/tmp/out bash scripts/gpu_node_check.sh
set -u
PY=${PY:-/opt/torch/.venv/bin/python3}
R=$(pwd)
mkdir -p /tmp/deps && $PY -m pip install -q --no-index --no-deps --target /tmp/deps .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$R:/tmp/deps KBOOT_HOME=/tmp/kb HOME=/tmp/h JUPYTER_DATA_DIR=/tmp/h/j
mkdir -p /tmp/h
echo "== detection"
$PY -c "
import sys, time, statistics
from bootstrap.install.accelerators import read_host
print(read_host().describe())
read_host(); s=[]
for _ in range(50):
    t=time.perf_counter(); read_host(); s.append(time.perf_counter()-t)
print('detection median ms', round(statistics.median(s)*1000,3), 'max ms', round(max(s)*1000,3))
"
echo "== create jax (auto) over the base, offline"
time $PY -m bootstrap create jax --python $PY --system-site-packages --offline --wheelhouse .gpu/jax-gpu --accelerator cuda-13 --json > $OUT/create.json 2> $OUT/create.err; echo rc=$?
tail -5 $OUT/create.err
echo "== doctor (no import), 5 runs"
TIMEFORMAT=%R
for i in 1 2 3 4 5; do { time $PY -m bootstrap doctor jax > /dev/null 2>&1; } 2>> $OUT/doctor-times.txt; done; cat $OUT/doctor-times.txt
$PY -m bootstrap doctor jax; echo rc=$?
echo "== doctor --import"
$PY -m bootstrap doctor jax --import --json > $OUT/doctor-import.json; echo rc=$?
$PY -m bootstrap doctor jax --import | tail -4
echo "== doctor on the bare base"
$PY -m bootstrap doctor --python $PY | head -12
echo "== run"
$PY -m bootstrap run jax --jobs 1 -- python -c "import jax, keras; print(keras.config.backend(), jax.devices())"; echo rc=$?
echo "== list"
$PY -m bootstrap list
