#!/usr/bin/env bash
# The whole default run on one machine, timed: install, render the embedded data, train and
# evaluate everything `results/table3.csv` needs, then print the wall time and the time per rule.
#
#   bash benchmarks/gpu_default_run.sh                 # default profile (3 seeds), GPU if present
#   bash benchmarks/gpu_default_run.sh --profile tiny  # the CI smoke test of this script (CPU)
#   bash benchmarks/gpu_default_run.sh --no-install    # skip scripts/install.sh
#
# With an NVIDIA GPU (nvidia-smi works) it uses profiles/gpu (several training jobs share the GPU
# through the gpu_jobs resource); without one, the default workstation profile. Extra arguments
# after `--` go to snakemake (e.g. `-- --config seeds='[0]'`).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=default
install=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
if [ "$install" -eq 1 ]; then
  bash scripts/install.sh
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  wf_profile=profiles/gpu
  nvidia-smi -L
else
  wf_profile=profiles/default
  echo "no NVIDIA GPU found: running on the CPU with $wf_profile"
fi
python -c "from slotmpe.precision import cpu_summary; print('CPU:', cpu_summary())"
run_start=$(date +%s)
snakemake --workflow-profile "$wf_profile" results/table3.csv --config profile="$profile" "${extra[@]}"
end=$(date +%s)
echo "install: $(( run_start - start )) s; snakemake results/table3.csv: $(( end - run_start )) s"
python benchmarks/rule_times.py benchmarks/out
