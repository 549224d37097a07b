#!/usr/bin/env bash
# `volt bench init` on both LibTorch legs (build/lt113: Debian's 1.13, build/lt2: the venv's 2.x) in one
# run, legs alternating round by round so that the machine's drift falls on both alike, and once per CPU
# kernel named in KERNELS ("best" = what this CPU has; "avx2" or "x86-64" = what a CPU without AVX-512
# would run, through VOLT_CPU_KERNEL). Prints every row as JSON (with "leg", "round" and "kernel_cap"
# added) to stdout and a summary per leg and kernel to stderr: medians and minima over the rounds, each
# mode's ratio to floor_fill_c (of wall time, and of CPU time: user + system seconds of all threads, which
# a loaded machine disturbs less), volt's own split of each row (prefault, fill, other: init_stats.h),
# init_module over the sum of its memory floor and its arithmetic (generate_cached), and 2.x over 1.13.
#
#   make build-113 build-2 && scripts/bench-init-legs.sh > init-legs.jsonl
#   ROUNDS=5 KERNELS="best avx2" MODEL=gpt2-xl PRECISION=bf16-true scripts/bench-init-legs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-gpt2-xl}
PRECISION=${PRECISION:-bf16-true}
MODES=${MODES:-init_module,init_module_v1,floor_fill,floor_fill_c,generate_cached}
ROUNDS=${ROUNDS:-3}
KERNELS=${KERNELS:-best}
THREADS=${THREADS:-$(nproc)}
LEGS=${LEGS:-lt113 lt2}
PAGES=${PAGES:-warm}  # warm, cold or as-is: see `volt bench init --help`

for leg in $LEGS; do
  [[ -x build/$leg/bin/volt ]] || { echo "build/$leg/bin/volt is missing: run make build-${leg#lt}" >&2; exit 1; }
done

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
echo "bench-init-legs: $MODEL $PRECISION, modes $MODES, $ROUNDS rounds, kernels: $KERNELS, $THREADS threads, $PAGES pages," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$ROUNDS"); do
  for kernel in $KERNELS; do
    for leg in $LEGS; do
      cap=()
      [[ $kernel == best ]] || cap=(env VOLT_CPU_KERNEL="$kernel")
      # The first pass of each leg starts with a warm-up (an unrecorded floor_fill_c). The modes rotate by
      # one per round: the first row of a pass paid ~0.6 s more system time (memory the previous process
      # freed, going back to the host) whichever mode it was.
      IFS=, read -r -a mode_list <<< "$MODES"
      shift_by=$(((round - 1) % ${#mode_list[@]}))
      rotated=$(IFS=,; echo "${mode_list[*]:shift_by},${mode_list[*]:0:shift_by}")
      "${cap[@]}" "build/$leg/bin/volt" bench init --model "$MODEL" --precision "$PRECISION" --accelerator cpu \
        --modes "${rotated%,}" --threads "$THREADS" --pages "$PAGES" --repeat 1 --warmup $((round == 1 ? 1 : 0)) 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    row = json.loads(line)
    row.update(leg=sys.argv[1], round=int(sys.argv[2]), kernel_cap=sys.argv[3])
    print(json.dumps(row))' "$leg" "$round" "$kernel" | tee -a "$rows"
    done
  done
done

python3 - "$rows" <<'EOF' >&2
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["kernel_cap"], r["leg"], r["mode"]), []).append(r)
def stat(kernel, leg, mode, f):
    runs = groups.get((kernel, leg, mode))
    return f([r["seconds"] for r in runs]) if runs else None
legs, kernels = [], []
for r in rows:
    if r["leg"] not in legs: legs.append(r["leg"])
    if r["kernel_cap"] not in kernels: kernels.append(r["kernel_cap"])
modes = []
for r in rows:
    if r["mode"] not in modes: modes.append(r["mode"])
print(f"{'kernel':<11} {'leg':<6} {'mode':<15} {'median_s':>9} {'min_s':>8} {'max_s':>8} {'x_floor_c':>9} "
      f"{'min_x_floor_c':>13} {'user_s':>7} {'sys_s':>6} {'cpu_x_floor_c':>13} {'prefault_s':>10} {'fill_s':>7} "
      f"{'other_s':>7} {'loadavg':>14}  kernel ran, torch")
for kernel in kernels:
    for leg in legs:
        for mode in modes:
            runs = groups.get((kernel, leg, mode))
            if not runs: continue
            med, lo, hi = (stat(kernel, leg, mode, f) for f in (statistics.median, min, max))
            floor_med = stat(kernel, leg, "floor_fill_c", statistics.median)
            floor_min = stat(kernel, leg, "floor_fill_c", min)
            loads = [r["loadavg"][0] for r in runs]
            user = statistics.median(r["user_seconds"] for r in runs)
            sys_ = statistics.median(r["sys_seconds"] for r in runs)
            cpu = statistics.median(r["user_seconds"] + r["sys_seconds"] for r in runs)
            floor_runs = groups.get((kernel, leg, "floor_fill_c"), [])
            floor_cpu = statistics.median(r["user_seconds"] + r["sys_seconds"] for r in floor_runs) if floor_runs else 0
            # volt's own counters: time faulting memory in, generating, and the rest of the row.
            split = [statistics.median(r.get(k, float("nan")) for r in runs)
                     for k in ("prefault_seconds", "cpu_fill_seconds", "other_seconds")]
            print(f"{kernel:<11} {leg:<6} {mode:<15} {med:9.3f} {lo:8.3f} {hi:8.3f} "
                  f"{med / floor_med if floor_med else 0:9.2f} {lo / floor_min if floor_min else 0:13.2f} "
                  f"{user:7.2f} {sys_:6.2f} {cpu / floor_cpu if floor_cpu else 0:13.2f} {split[0]:10.3f} {split[1]:7.3f} "
                  f"{split[2]:7.3f} {min(loads):6.2f}-{max(loads):<6.2f}  "
                  f"{runs[0]['cpu_kernel']}, {runs[0].get('init_stream', '?')}, {runs[0]['torch_version']}")
    # init_module does what floor_fill_c (the memory) and generate_cached (the arithmetic) each do alone:
    # their sum is what init would cost with nothing else in the way.
    for leg in legs:
        parts = [stat(kernel, leg, m, statistics.median) for m in ("init_module", "floor_fill_c", "generate_cached")]
        if all(parts):
            print(f"{kernel:<11} {leg:<6} init_module / (floor_fill_c + generate_cached) = {parts[0]:.3f} / "
                  f"({parts[1]:.3f} + {parts[2]:.3f}) = {parts[0] / (parts[1] + parts[2]):.2f}")
    if len(legs) == 2:
        for mode in modes:
            a, b = (stat(kernel, leg, mode, statistics.median) for leg in legs)
            if a and b:
                print(f"{kernel:<11} {legs[1]}/{legs[0]} {mode:<15} median ratio {b / a:.2f}, min ratio "
                      f"{stat(kernel, legs[1], mode, min) / stat(kernel, legs[0], mode, min):.2f}")
first = rows[0] if rows else {}
print(f"CPU: {first.get('cpu_model')}; flags seen: {' '.join(first.get('cpu_flags', []))}")
EOF
