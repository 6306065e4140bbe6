# nslib.sh: throwaway network namespaces for demos and benchmarks (sourced).
# shellcheck shell=bash disable=SC2034  # its variables are for the scripts that source it
# Every namespace and process made through here is torn down on exit, also
# when the script fails or is interrupted. Names carry the pid, so runs can
# overlap.
NSLIB_TAG=${NSLIB_TAG:-nb$$}
NSLIB_NS=()
NSLIB_PIDS=()
NSLIB_FILES=()

ns_cleanup() {
  local p n
  set +e   # a process that already ended must not stop the cleanup
  for p in "${NSLIB_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${NSLIB_PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  for n in "${NSLIB_NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  for n in "${NSLIB_FILES[@]}"; do rm -rf "$n"; done
  NSLIB_PIDS=() NSLIB_NS=() NSLIB_FILES=()
}
trap ns_cleanup EXIT
trap 'exit 130' INT TERM

# ns_new NAME: make namespace ${NSLIB_TAG}NAME with lo up; prints its name.
ns_new() {
  local n="${NSLIB_TAG}$1"
  ip netns add "$n" || return 1
  NSLIB_NS+=("$n")
  ip -n "$n" link set lo up
}

# ns_bg NS CMD...: run CMD in namespace NS in the background; sets NS_PID.
ns_bg() {
  local n=$1; shift
  ip netns exec "$n" "$@" &
  NS_PID=$!
  NSLIB_PIDS+=("$NS_PID")
}

# ns_wait_link NS IFNAME: wait up to 5 s for an interface to appear.
ns_wait_link() {
  for _ in $(seq 50); do ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "interface $2 did not appear in $1" >&2
  return 1
}

# ns_stop PID: SIGINT a process started with ns_bg and wait for it to end.
ns_stop() {
  kill -INT "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}

# ns_tmp: make a temporary directory removed on exit; sets NS_TMP.
ns_tmp() {
  NS_TMP=$(mktemp -d "/tmp/${NSLIB_TAG}.XXXX")
  NSLIB_FILES+=("$NS_TMP")
}

# ns_wait_port NS PORT: wait up to 5 s for a TCP listener on PORT.
ns_wait_port() {
  for _ in $(seq 50); do ip netns exec "$1" ss -ltn | grep -q ":$2 " && return 0; sleep 0.1; done
  echo "nothing listens on $2 in $1" >&2
  return 1
}

# ratio A B: A / B with two decimals (0 when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# median V...: the median of the values (the lower middle one of an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ns_iperf3 CLIENT_NS SERVER_NS ADDR [PORT]: one iperf3 TCP run of
# BENCH_SECONDS (default 5) to a server on port 5201 in SERVER_NS, reached
# at ADDR:PORT (default 5201); prints the receiver's Mbit/s, 0 on failure.
ns_iperf3() {
  local secs=${BENCH_SECONDS:-5} pid out
  ns_bg "$2" iperf3 -s -1 -p 5201 >/dev/null 2>&1
  pid=$NS_PID
  ns_wait_port "$2" 5201
  out=$(ip netns exec "$1" timeout $((secs + 20)) iperf3 -c "$3" -p "${4:-5201}" -t "$secs" -f m 2>&1 |
        awk '/receiver/ { print $(NF-2) }')
  wait "$pid" 2>/dev/null || true
  echo "${out:-0}"
}

# ns_wire_taps TAG NET [OPTION...]: `netbe wire OPTION...` in namespace
# ${NSLIB_TAG}TAGh joins a tap in TAGa (NET.1/24) to one in TAGb (NET.2/24).
# Sets WIRE_PID, WIRE_A, WIRE_B; the wire's output goes to $NS_TMP/wire-TAG.log.
ns_wire_taps() {
  local t=$1 net=$2; shift 2
  ns_new "${t}h"; ns_new "${t}a"; ns_new "${t}b"
  local h=${NSLIB_TAG}${t}h ta=tap${NSLIB_TAG}${t}a tb=tap${NSLIB_TAG}${t}b
  WIRE_A=${NSLIB_TAG}${t}a WIRE_B=${NSLIB_TAG}${t}b
  ns_bg "$h" "$PWD/scripts/netbe" wire "$ta" "$tb" "$@" >"$NS_TMP/wire-$t.log"
  WIRE_PID=$NS_PID
  ns_wait_link "$h" "$ta"; ns_wait_link "$h" "$tb"
  ip -n "$h" link set "$ta" netns "$WIRE_A"; ip -n "$h" link set "$tb" netns "$WIRE_B"
  ip -n "$WIRE_A" addr add "$net.1/24" dev "$ta"; ip -n "$WIRE_A" link set "$ta" up
  ip -n "$WIRE_B" addr add "$net.2/24" dev "$tb"; ip -n "$WIRE_B" link set "$tb" up
}

# perf_start PID: with BENCH_PERF=1, record PID's on-CPU samples (4000 a
# second) into $NS_TMP/perf.data for BENCH_SECONDS; sets PERF_PID ("" when off).
perf_start() {
  PERF_PID=
  [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null || return 0
  perf record -q -F 4000 -g -o "$NS_TMP/perf.data" -p "$1" -- sleep "${BENCH_SECONDS:-5}" >/dev/null 2>&1 &
  PERF_PID=$!
}
