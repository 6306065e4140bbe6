# nslib.sh: throwaway network namespaces for demos and benchmarks (sourced).
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
