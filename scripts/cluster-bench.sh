#!/usr/bin/env bash
# cluster-bench.sh: a cluster of herald nodes on one box, measured.
#
# One process here may hold at most ~20,000 sockets (ulimit -n cannot be
# raised), so a run of more connections is NODES `herald serve` processes
# on one shared log (Redis or NATS JetStream) and SHARDS `herald bench
# --shard i/n` processes, which together use the source addresses
# 127.0.0.1 … 127.0.0.SOURCE_IPS. Each subscriber connects to one node
# (round robin over the list) and, when its node dies, resumes from its
# cursor on another (a dead node's subscribers spread over the others). Publishing goes to the first node. With KILL=1
# the last node gets SIGKILL halfway through the publishing.
#
# The shards' reports are added up by `herald bench --merge`, with each
# node's VmRSS before the connections and while they are held: the
# summary is printed and written to OUT/summary.json.
#
# Settings (environment): BROKER=redis|nats NODES=4 SUBSCRIBERS=60000
# SHARDS=4 TOPICS=10 RATE=600 (publish requests/s in all) DURATION=30s
# KILL=0|1 SOURCE_IPS=8 OUT=dir BENCH_FLAGS="extra herald bench flags"
# SETTLE=5s (the shards hold their subscribers idle that long before
# publishing; the nodes' memory is sampled then)
# NODE_FLAGS="extra herald serve flags" PROFILE=0|1 (1: OUT gets a CPU
# profile of nodes 1 and 2, PROFILE_SECONDS=10 long from when the
# connections are held, and one of shard 1's whole run).
# Each event reaches SUBSCRIBERS/(SHARDS*TOPICS) subscribers, so the
# offered deliveries/s are RATE*SUBSCRIBERS/(SHARDS*TOPICS).
set -euo pipefail

BROKER=${BROKER:-redis}
NODES=${NODES:-4}
SUBSCRIBERS=${SUBSCRIBERS:-60000}
SHARDS=${SHARDS:-4}
TOPICS=${TOPICS:-10}
RATE=${RATE:-600}
DURATION=${DURATION:-30s}
KILL=${KILL:-0}
SOURCE_IPS=${SOURCE_IPS:-8}
BENCH_FLAGS=${BENCH_FLAGS:-}
NODE_FLAGS=${NODE_FLAGS:-}
PROFILE=${PROFILE:-0}
SETTLE=${SETTLE:-5s}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
BIN=${BIN:-bin/herald}
OUT=${OUT:-$(mktemp -d /tmp/herald-cluster-bench.XXXXXX)}
REDIS_ADDR=${REDIS_ADDR:-127.0.0.1:6379}
NATS_ADDR=${NATS_ADDR:-127.0.0.1:4222}

die() { echo "cluster-bench: $*" >&2; exit 2; }

[[ $NODES -ge 2 ]] || die "NODES=$NODES: want at least 2"
[[ $SHARDS -ge 1 ]] || die "SHARDS=$SHARDS: want at least 1"
[[ $KILL == 0 || $KILL == 1 ]] || die "KILL=$KILL: want 0 or 1"
(( (SUBSCRIBERS + SHARDS - 1) / SHARDS <= 19000 )) ||
	die "SUBSCRIBERS=$SUBSCRIBERS over SHARDS=$SHARDS is more than one process's 19,000 sockets: raise SHARDS"
# A node is one process too: it must hold its share, and with KILL=1 its
# share of the dead node's subscribers as well.
survivors=$(( NODES - KILL ))
(( (SUBSCRIBERS + survivors - 1) / survivors <= 19000 )) ||
	die "SUBSCRIBERS=$SUBSCRIBERS over $survivors nodes (NODES=$NODES, KILL=$KILL) is more than one process's 19,000 sockets: raise NODES"
(( SOURCE_IPS >= SHARDS )) || die "SOURCE_IPS=$SOURCE_IPS: want at least one per shard ($SHARDS)"
# Go durations of whole seconds or milliseconds, for the half-time kill.
millis() {
	case $2 in
	0) echo 0 ;;
	*ms) echo "${2%ms}" ;;
	*s) echo $(( ${2%s} * 1000 )) ;;
	*m) echo $(( ${2%m} * 60000 )) ;;
	*) die "$1=$2: want e.g. 30s, 2m or 500ms" ;;
	esac
}
dur_ms=$(millis DURATION "$DURATION")
settle_ms=$(millis SETTLE "$SETTLE")
mkdir -p "$OUT"

run_id="cb$(date +%s)$$"
case $BROKER in
redis) broker="redis://$REDIS_ADDR/0?prefix=herald-$run_id" ;;
nats)
	stream="HERALD_${run_id^^}"
	broker="nats://$NATS_ADDR?stream=$stream&subjects=${stream,,}&storage=memory"
	;;
*) die "BROKER=$BROKER: want redis or nats" ;;
esac

node_pids=() node_urls=() node_metrics=() shard_pids=() profile_pids=()
# delete_streams deletes the run's JetStream streams (its log and those the
# nodes made beside it, KV buckets included) with JetStream API requests
# over the plain NATS protocol, so that no NATS client is needed.
delete_streams() {
	local names n
	exec 3<>"/dev/tcp/${NATS_ADDR%:*}/${NATS_ADDR#*:}"
	printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.cb 1\r\nPUB $JS.API.STREAM.NAMES _INBOX.cb 0\r\n\r\n' >&3
	names=$(timeout 5 grep -m1 -o '"streams":\[[^]]*\]' <&3 | grep -oE "\"(KV_)?${stream}[A-Z0-9_]*\"" | tr -d '"')
	for n in $names; do
		printf 'PUB $JS.API.STREAM.DELETE.%s 0\r\n\r\n' "$n" >&3
	done
	printf 'PING\r\n' >&3
	timeout 5 grep -q -m1 PONG <&3
	exec 3>&-
}

cleanup() {
	local pid
	for pid in "${profile_pids[@]}" "${shard_pids[@]}" "${node_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${profile_pids[@]}" "${shard_pids[@]}" "${node_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	# The run's log, gone with it.
	if [[ $BROKER == redis ]] && command -v redis-cli >/dev/null; then
		redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR#*:}" --scan --pattern "{herald-$run_id}:*" |
			xargs -r redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR#*:}" del >/dev/null || true
	elif [[ $BROKER == nats ]]; then
		delete_streams 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kb() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# A free port of 127.0.0.1, below the ephemeral range the bench dials from.
free_port() {
	local p
	while :; do
		p=$(( 15000 + RANDOM % 5000 ))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

for i in $(seq 1 "$NODES"); do
	port=$(free_port)
	debug=()
	metrics="http://127.0.0.1:$port"
	if [[ $PROFILE == 1 ]]; then
		mport=$(free_port)
		debug=(--metrics-addr "127.0.0.1:$mport" --pprof)
		metrics="http://127.0.0.1:$mport"
	fi
	# shellcheck disable=SC2086 # NODE_FLAGS is a list of flags
	"$BIN" serve --addr "127.0.0.1:$port" --broker "$broker" --log-level warn "${debug[@]}" $NODE_FLAGS >"$OUT/node-$i.log" 2>&1 &
	node_pids+=($!)
	node_urls+=("http://127.0.0.1:$port")
	node_metrics+=("$metrics")
done
for i in "${!node_urls[@]}"; do
	for _ in $(seq 200); do
		curl -sf "${node_urls[$i]}/readyz" >/dev/null && break
		kill -0 "${node_pids[$i]}" 2>/dev/null || die "node $((i + 1)) exited: $(tail -5 "$OUT/node-$((i + 1)).log")"
		sleep 0.1
	done
	curl -sf "${node_urls[$i]}/readyz" >/dev/null || die "node $((i + 1)) at ${node_urls[$i]} is not ready"
done
rss_before=()
for pid in "${node_pids[@]}"; do rss_before+=("$(rss_kb "$pid" VmRSS)"); done
urls=$(IFS=,; echo "${node_urls[*]}")
echo "cluster-bench: $NODES nodes on $BROKER ($urls), $SUBSCRIBERS subscribers in $SHARDS shards, $RATE publishes/s for $DURATION, kill $KILL; output in $OUT" >&2

per_shard_ips=$(( SOURCE_IPS / SHARDS ))
for i in $(seq 1 "$SHARDS"); do
	profile=()
	[[ $PROFILE == 1 && $i == 1 ]] && profile=(--cpuprofile "$OUT/shard-1.cpu.pprof")
	# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
	"$BIN" bench "${profile[@]}" --shard "$i/$SHARDS" --transport mixed --source-ips "$per_shard_ips" \
		--url "$urls" --publish-url "${node_urls[0]}" --subscribers "$SUBSCRIBERS" --topics "$TOPICS" \
		--rate "$RATE" --duration "$DURATION" --settle "$SETTLE" --prefix "bench-$run_id" --quiet --json "$OUT/shard-$i.json" \
		$BENCH_FLAGS >"$OUT/shard-$i.txt" 2>&1 &
	shard_pids+=($!)
done

# Held: every subscriber connected, by the nodes' own count.
connections() {
	local u n=0
	for u in "${node_metrics[@]}"; do
		n=$(( n + $(curl -sf "$u/metrics" | awk '/^herald_connections[{ ]/ { s += $NF } END { printf "%d", s }') ))
	done
	echo "$n"
}
held=0
for _ in $(seq 1200); do
	held=$(connections)
	(( held >= SUBSCRIBERS )) && break
	for pid in "${shard_pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || break 2
	done
	sleep 0.1
done
held_ms=$(( $(date +%s%N) / 1000000 + settle_ms )) # the bench publishes from about then
rss_held=()
for pid in "${node_pids[@]}"; do rss_held+=("$(rss_kb "$pid" VmRSS)"); done
echo "cluster-bench: $held connections held" >&2
if [[ $PROFILE == 1 ]]; then
	for i in 0 1; do
		curl -sf -o "$OUT/node-$((i + 1)).cpu.pprof" "${node_metrics[$i]}/debug/pprof/profile?seconds=$PROFILE_SECONDS" &
		profile_pids+=($!)
	done
fi

killed=-1 rss_peak_killed=0
if [[ $KILL == 1 ]]; then
	# Half of the publishing, counted from the connections held (not from
	# after the RSS reads, which take their own time).
	wait_ms=$(( dur_ms / 2 - ($(date +%s%N) / 1000000 - held_ms) ))
	(( wait_ms > 0 )) && sleep "$(awk -v ms="$wait_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
	killed=$(( NODES - 1 ))
	rss_peak_killed=$(rss_kb "${node_pids[$killed]}" VmHWM)
	kill -9 "${node_pids[$killed]}"
	wait "${node_pids[$killed]}" 2>/dev/null || true # reaped here, without the shell's "Killed" line
	echo "cluster-bench: killed node $NODES (pid ${node_pids[$killed]}) at half time" >&2
fi

shard_fail=0
for i in "${!shard_pids[@]}"; do
	wait "${shard_pids[$i]}" || shard_fail=1
done
shard_pids=()
for pid in "${profile_pids[@]}"; do wait "$pid" || true; done
profile_pids=()
# Each surviving node's counters at the end: the failovers' replays read
# from the nodes' tails or from the broker (herald_replay_pages_total).
for i in "${!node_metrics[@]}"; do
	(( i == killed )) && continue
	curl -sf -o "$OUT/node-$((i + 1)).metrics" "${node_metrics[$i]}/metrics" || continue
	pages=$(awk '/^herald_replay_pages_total/ { printf "%s%s", sep, $0; sep = ", " }' "$OUT/node-$((i + 1)).metrics")
	echo "cluster-bench: node $((i + 1)): ${pages:-no replay pages}" >&2
done
[[ $PROFILE == 1 ]] && echo "cluster-bench: CPU profiles in $OUT/*.cpu.pprof (go tool pprof -top bin/herald FILE)" >&2

{
	echo "["
	for i in "${!node_pids[@]}"; do
		peak=$(rss_kb "${node_pids[$i]}" VmHWM)
		k=false
		if (( i == killed )); then k=true peak=$rss_peak_killed; fi
		(( i > 0 )) && echo ","
		printf '{"url":"%s","pid":%d,"killed":%s,"rss_kb_before":%d,"rss_kb_held":%d,"rss_kb_peak":%d}' \
			"${node_urls[$i]}" "${node_pids[$i]}" "$k" "${rss_before[$i]}" "${rss_held[$i]}" "${peak:-0}"
	done
	echo "]"
} >"$OUT/nodes.json"

status=0
"$BIN" bench --merge "$OUT/shard-*.json" --nodes "$OUT/nodes.json" --json "$OUT/summary.json" || status=$?
echo "cluster-bench: summary in $OUT/summary.json" >&2
if (( shard_fail )); then
	echo "cluster-bench: a shard failed, see $OUT/shard-*.txt" >&2
	status=1
fi
exit "$status"
