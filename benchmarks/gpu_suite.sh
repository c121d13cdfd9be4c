#!/usr/bin/env bash
# The GPU rows of the benchmarks (issues #3-#7), in one go.
#
#   bash benchmarks/gpu_suite.sh OUTDIR [NAME ...]          # --device cuda, paper-sized settings
#   bash benchmarks/gpu_suite.sh --smoke OUTDIR [NAME ...]  # tiny sizes, --device auto (checks the script)
#
# NAME: linear_gd memorization contamination directions neurons tests (default: all, in that order);
# tests = pytest tests/test_cuda_paths.py (GPU paths against the CPU; needs pytest, skips without CUDA).
# Each benchmark's markdown goes to OUTDIR/NAME.md, its stderr to OUTDIR/NAME.log. A failing one is
# reported and the others still run; the exit status is 0 only when all succeeded.
# Works from a plain checkout: PYTHONPATH=src when spurlab is not installed, SPURLAB_DATA from
# ../shared/data or .data when unset. PYTHON picks the interpreter (default .venv/bin/python
# when present, else python3); BENCH_TIMEOUT (seconds) bounds each benchmark when set.
set -u
cd "$(dirname "$0")/.." || exit 2

ALL=(linear_gd memorization contamination directions neurons tests)
declare -A MODULE=([linear_gd]=bench_linear_gd [memorization]=bench_memorization
                   [contamination]=bench_contamination [directions]=bench_directions [neurons]=bench_neurons
                   [tests]=tests/test_cuda_paths.py)
declare -A FULL=(
  [linear_gd]="--runs 100 --steps 10000 --n 1000 --ref-runs 10"
  [memorization]="--full"
  [contamination]="--full-study"
  [directions]="--ref-classes 2"
  [neurons]=""
)
declare -A SMOKE=(
  [linear_gd]="--runs 4 --steps 200 --n 100 --ref-runs 2"
  [memorization]="--n 300 --small-n 60 --k 2000 --refits 1 --no-quick-sweep"
  [contamination]="--steps 100 --full-steps 200"
  [directions]="--n-per-class 300 --n-eval-per-class 200 --dim 32 --classes 3 --ref-classes 1"
  [neurons]="--n-eval 64 --sweep-eval 16 --loop-sample 8 --repeats 1"
)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The GPU path tests: pytest's full output on stderr (-> NAME.log), a markdown summary on stdout (-> NAME.md).
gpu_tests() {
  if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "pytest is not installed for $PYTHON: the 'tests' entry needs it (carry a pytest wheel and" \
         "pip install it, or point PYTHON at an interpreter that has it)" >&2
    return 3
  fi
  local log rc
  log=$(mktemp)
  ${BENCH_TIMEOUT:+timeout "$BENCH_TIMEOUT"} "$PYTHON" -m pytest -q -rsfE -p no:cacheprovider \
    "${MODULE[tests]}" >"$log" 2>&1
  rc=$?
  cat "$log" >&2
  echo "## GPU path tests: ${MODULE[tests]} ($(date +%F))"
  echo
  "$PYTHON" -c 'import torch; from benchmarks._timing import machine_line
print(machine_line("cuda" if torch.cuda.is_available() else "cpu (no CUDA: the tests skip)"))' 2>&1
  echo "- command: \`python -m pytest -q -rsfE ${MODULE[tests]}\` (exit status $rc)"
  echo
  echo '```'
  if grep -q "short test summary info" "$log"; then sed -n '/short test summary info/,$p' "$log"; else tail -n 1 "$log"; fi
  echo '```'
  rm -f "$log"
  return $rc
}

mode=full
if [ "${1:-}" = "--smoke" ]; then mode=smoke; shift; fi
case "${1:-}" in ""|-h|--help) usage ;; esac
outdir=$1; shift
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
for name in "${names[@]}"; do
  [ -n "${MODULE[$name]:-}" ] || { echo "unknown benchmark '$name' (known: ${ALL[*]})" >&2; exit 2; }
done
if [ "$mode" = smoke ]; then device=auto; else device=cuda; fi

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=${MPLBACKEND:-Agg}
if ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('spurlab') is None)" 2>/dev/null
then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  echo "spurlab is not installed for $PYTHON: using PYTHONPATH=$PYTHONPATH"
fi
if [ -z "${SPURLAB_DATA:-}" ]; then
  if [ -d ../shared/data ]; then export SPURLAB_DATA="$(cd ../shared/data && pwd)"
  elif [ -d .data ]; then export SPURLAB_DATA="$PWD/.data"
  else echo "warning: SPURLAB_DATA is unset and neither ../shared/data nor .data exists (MNIST is needed by" \
            "contamination --full-study and neurons)" >&2
  fi
fi
echo "python: $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
echo "SPURLAB_DATA=${SPURLAB_DATA:-<unset>}; mode $mode; device $device; benchmarks: ${names[*]}"

# What spurlab needs that this interpreter lacks (so a session knows which wheels to carry).
SUITE_DEVICE=$device "$PYTHON" - <<'EOF'
import importlib
import os
import pkgutil

missing = {}


def attempt(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing.setdefault(exc.name or "?", []).append(module)
    except Exception as exc:  # noqa: BLE001 - any other failure is worth a line too
        missing.setdefault(f"<{type(exc).__name__}: {exc}>", []).append(module)


for module in ("torch", "numpy", "scipy", "sklearn", "pandas", "pyarrow", "yaml", "matplotlib", "PIL", "typer",
               "rich", "threadpoolctl", "spurlab", "spurlab.cli"):
    attempt(module)
try:
    import spurlab.studies as studies
except Exception:  # noqa: BLE001 - reported by attempt() below
    attempt("spurlab.studies")
else:
    for info in pkgutil.walk_packages(studies.__path__, "spurlab.studies."):
        attempt(info.name)
try:
    import pytest  # noqa: F401 - not a spurlab dependency, but the 'tests' entry runs it
except ImportError:
    print("pytest: missing (only the 'tests' entry needs it: carry a pytest wheel)")
if missing:
    print("MISSING imports (carry wheels for them):")
    for name, needed_by in sorted(missing.items()):
        users = [m for m in needed_by if m != name]
        print(f"  {name}" + (f" (needed by {', '.join(users)})" if users else ""))
else:
    print("imports: everything spurlab needs is present")
try:
    import torch
except ImportError:
    pass
else:
    print(f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    if os.environ.get("SUITE_DEVICE") == "cuda" and not torch.cuda.is_available():
        print("warning: every benchmark runs with --device cuda and will fail here (use --smoke on a CPU)")
EOF

mkdir -p "$outdir" || exit 2
ok=() failed=()
for name in "${names[@]}"; do
  if [ "$name" = tests ]; then
    cmd=(gpu_tests)
    shown="$PYTHON -m pytest -q -rsfE ${MODULE[tests]}"
  else
    if [ "$mode" = smoke ]; then args=${SMOKE[$name]}; else args=${FULL[$name]}; fi
    cmd=("$PYTHON" -m "benchmarks.${MODULE[$name]}" $args --device "$device")
    [ -n "${BENCH_TIMEOUT:-}" ] && cmd=(timeout "$BENCH_TIMEOUT" "${cmd[@]}")
    shown="${cmd[*]}"
  fi
  echo
  echo "=== $name: $shown"
  start=$SECONDS
  "${cmd[@]}" >"$outdir/$name.md.part" 2>"$outdir/$name.log"
  rc=$?
  if [ $rc -eq 0 ]; then
    mv "$outdir/$name.md.part" "$outdir/$name.md"
    ok+=("$name")
    echo "--- $name: ok in $((SECONDS - start)) s -> $outdir/$name.md"
    cat "$outdir/$name.md"
  else
    failed+=("$name")
    echo "--- $name: FAILED (exit $rc) after $((SECONDS - start)) s; stdout kept in $outdir/$name.md.part;" \
         "last lines of $outdir/$name.log:"
    tail -n 15 "$outdir/$name.log"
  fi
done
echo
echo "suite ($mode): ${#ok[@]} ok (${ok[*]:-none}), ${#failed[@]} failed (${failed[*]:-none})"
[ ${#failed[@]} -eq 0 ]
