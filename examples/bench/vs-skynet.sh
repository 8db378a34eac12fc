#!/bin/bash
# luahost against skynet 1.8 on this machine, interleaved (docs/performance.md,
# "Ratios against the raw limit and skynet").
#
# Usage: SKYNET=/path/to/built/skynet examples/bench/vs-skynet.sh [ROUNDS] [SECS]
#
# SKYNET is a skynet tree already built on this machine (the `skynet` binary,
# cservice/ and luaclib/ in it); this script never downloads or builds it:
# ../shared/bench/README.md says which commit was measured and how. The
# bench services come from ../shared/bench/skynet (or SKYNET_BENCH).
#
# Each round runs skynet's call (1 and 100 callers), send and in-process call
# (1 and 100 callers), writing their rates to a figures file, then
# `luahost bench compare --rounds 1 --skynet <that round's figures>`, which
# runs luahost's workloads and the raw limit right after. At the end, the
# median over the rounds of each pair's ratio. Everything runs on 127.0.0.1
# and is bounded by `timeout`.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-4}
: "${SKYNET:?set SKYNET to an already built skynet tree (see ../shared/bench/README.md)}"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BENCH_DIR=${SKYNET_BENCH:-$REPO/../shared/bench/skynet}
LUAHOST=${LUAHOST:-$REPO/target/release/luahost}
OUT=${OUT:-$(mktemp -d)}
PORT=${SKYNET_PORT:-27001}
mkdir -p "$OUT"
[ -x "$SKYNET/skynet" ] || { echo "no $SKYNET/skynet: build skynet first" >&2; exit 1; }
[ -f "$BENCH_DIR/config.node" ] || { echo "no skynet bench services in $BENCH_DIR" >&2; exit 1; }
[ -x "$LUAHOST" ] || { echo "no $LUAHOST: cargo build --release first" >&2; exit 1; }
export LUAHOST_LOG=${LUAHOST_LOG:-warn}

# the environment the services' config.node reads
export SKYNET_ROOT=$SKYNET BENCH_DIR SKY_THREADS=${SKY_THREADS:-2} BENCH_DUR=$SECS
export BENCH_MODE=x BENCH_CONC=1 BENCH_PAYLOAD=0 SKY_EXTRA_SVC="" BENCH_PORT=$PORT
CFG=$BENCH_DIR/config.node

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
}
trap stop_server EXIT
SKY_START=bench_server timeout 3600 "$SKYNET/skynet" "$CFG" > "$OUT/skynet_server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do grep -q SERVER_READY "$OUT/skynet_server.log" && break; sleep 0.1; done
grep -q SERVER_READY "$OUT/skynet_server.log" || { echo "skynet server did not start:" >&2; cat "$OUT/skynet_server.log" >&2; exit 1; }

skynet_client() { # mode conc -> one `workload=.. conc=.. rate=..` line
  local line
  line=$(BENCH_MODE=$1 BENCH_CONC=$2 BENCH_PAYLOAD=0 SKY_START=bench_client \
    timeout $((SECS + 30)) "$SKYNET/skynet" "$CFG" 2>&1 | grep '^RESULT' || true)
  [ -n "$line" ] || { echo "skynet $1 conc=$2 printed no RESULT" >&2; return 1; }
  echo "$line" >> "$OUT/skynet_raw.txt"
  local w
  case $1 in ccall) w=call ;; csend) w=send ;; lcall) w=local-call ;; esac
  echo "workload=$w conc=$2 rate=$(echo "$line" | sed -n 's/.* rate=\([0-9.]*\).*/\1/p')"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/compare.txt"
: > "$OUT/skynet-figures.txt"
for r in $(seq "$ROUNDS"); do
  FIG=$OUT/skynet-figures-$r.txt
  : > "$FIG"
  for w in "ccall 1" "ccall 100" "csend 1" "lcall 1" "lcall 100"; do
    skynet_client $w | tee -a "$FIG" >> "$OUT/skynet-figures.txt"
  done
  echo "ROUND $r skynet: $(tr '\n' ' ' < "$FIG")" | tee -a "$OUT/compare.txt"
  timeout $((SECS * 20 + 300)) "$LUAHOST" bench compare --secs "$SECS" --rounds 1 --skynet "$FIG" \
    | tee -a "$OUT/compare.txt"
done
stop_server
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/compare.txt"

# the median over the rounds of each pair's ratio
echo "MEDIAN over $ROUNDS rounds:"
grep '^RESULT .* ratio=' "$OUT/compare.txt" | awk '
  { key = ""; for (i = 2; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == "workload" || kv[1] == "conc" || kv[1] == "ref" || kv[1] == "goal") key = key " " $i;
      if (kv[1] == "ratio") ratio = kv[2] }
    n[key]++; v[key, n[key]] = ratio }
  END { for (k in n) { m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, i];
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      med = a[int(m / 2) + 1]; split(k, f, " "); goal = ""; for (i in f) if (f[i] ~ /^goal=/) goal = substr(f[i], 6);
      met = (goal == "none") ? "-" : ((med + 0 >= goal + 0) ? "yes" : "no");
      printf "RESULT%s ratio=%s met=%s rounds=%d\n", k, med, met, m } }' | sort | tee "$OUT/median.txt"
echo "figures and logs in $OUT (skynet-figures.txt holds every round's skynet rates)"
