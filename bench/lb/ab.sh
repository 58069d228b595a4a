#!/usr/bin/env bash
# bench/lb/ab.sh: focused A/B runs of one phase of run.sh, for measuring a
# change: several homelab-lb binaries (and optionally HAProxy) back to
# back, interleaved, same pinning and configs as run.sh. Needs root.
#
#   bench/lb/ab.sh PHASE RUNS TARGET...
#
# PHASE: close (CPU per new connection), keepalive (CPU per request),
# bulk1 / bulk4 (iperf3, 1 or 4 streams), idle (RSS per idle connection),
# kill (backend killed under load). TARGET: haproxy, or NAME=PATH of a
# homelab-lb binary. Env: SECS (default 5; bulk 30), IDLE_CONNS (5000),
# REPLAY=true (replayOnReset on the two-server backend), PARK=DURATION
# (tuning.parkAfter).
# Prints one line per run and the median per target.
set -u -o pipefail
PHASE=$1 RUNS=$2
shift 2
TARGETS=("$@")
SECS=${SECS:-5}
[ "${PHASE#bulk}" != "$PHASE" ] && SECS=${SECS_BULK:-30}
IDLE_CONNS=${IDLE_CONNS:-5000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/lbab.XXXXXX)
BIN=$W/bin
mkdir -p "$BIN"
BE_A=127.0.0.2:18081 BE_B=127.0.0.2:18082
PX=127.0.0.3 ADMIN=127.0.0.3:29100
PIN0="nice -n -10 taskset -c 0" PIN1="nice -n -10 taskset -c 1"
CLK=$(getconf CLK_TCK)
(cd "$ROOT" && go build -o "$BIN/" ./bench/lb/backend ./bench/lb/idle ./bench/lb/watch) || exit 1
ulimit -n "$(ulimit -Hn)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
wait_listen() { for _ in $(seq 200); do ss -Hltn "src $1" | grep -q . && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }

$PIN0 "$BIN/backend" -listen $BE_A & PIDS+=($!)
$PIN0 iperf3 -s -B 127.0.0.2 -p 15201 >/dev/null 2>&1 & PIDS+=($!)
wait_listen $BE_A

cat >"$W/h.yaml" <<EOF
admin: {listen: $ADMIN}
timeouts: {connect: 3s, idle: 10m}
frontends:
  - {name: iperf, listen: ["$PX:25201"], backend: iperf}
  - {name: http, listen: ["$PX:28080"], backend: http}
  - {name: http2, listen: ["$PX:28090"], backend: http2}
backends:
  - {name: iperf, servers: [{address: "127.0.0.2:15201"}]}
  - {name: http, servers: [{address: "$BE_A"}]}
  - name: http2
    balance: roundrobin
    servers: [{address: "$BE_A"}, {address: "$BE_B"}]
    healthCheck: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2}
EOF
[ "${REPLAY:-}" = true ] && echo "    replayOnReset: true" >>"$W/h.yaml"
[ -n "${PARK:-}" ] && echo "tuning: {parkAfter: $PARK}" >>"$W/h.yaml"
cat >"$W/ha.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  maxpipes 64
  tune.pipesize 262144
  stats socket $W/ha.sock mode 600 level admin
defaults
  mode tcp
  timeout connect 3s
  timeout client 10m
  timeout server 10m
  timeout check 500ms
  retries 3
  option redispatch
  option splice-auto
frontend iperf
  bind $PX:25201
  default_backend iperf
backend iperf
  server s1 127.0.0.2:15201
frontend http
  bind $PX:28080
  default_backend http
backend http
  server s1 $BE_A
frontend http2
  bind $PX:28090
  default_backend http2
backend http2
  balance roundrobin
  server s1 $BE_A check inter 1s fall 2 rise 2
  server s2 $BE_B check inter 1s fall 2 rise 2
EOF

start() { # start TARGET -> PP
	if [ "$1" = haproxy ]; then
		$PIN1 haproxy -db -f "$W/ha.cfg" 2>>"$W/ha.log" &
	else
		GOMAXPROCS=1 $PIN1 "${1#*=}" run --config "$W/h.yaml" --watch=-1s --log-level warn 2>>"$W/h.log" &
	fi
	PP=$!
	wait_listen $PX:28080
	wait_listen $PX:25201
}
stopp() { kill "$PP"; wait "$PP" 2>/dev/null; sleep 0.2; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
name() { echo "${1%%=*}"; }

declare -A VALS
for run in $(seq "$RUNS"); do
	for t in "${TARGETS[@]}"; do
		n=$(name "$t")
		start "$t"
		case $PHASE in
		close | keepalive)
			hdr=()
			[ "$PHASE" = close ] && hdr=(-H "Connection: close")
			c0=$(ticks $PP)
			$PIN0 wrk -t1 -c32 -d"$SECS"s --timeout 5s "${hdr[@]}" "http://$PX:28080/" >"$W/wrk" 2>&1
			c1=$(ticks $PP)
			req=$(awk '/requests in/{print $1}' "$W/wrk")
			v=$(awk -v c=$((c1 - c0)) -v k="$CLK" -v n="$req" 'BEGIN{printf "%.2f", c / k / n * 1e6}')
			extra="req=$req"
			;;
		bulk1 | bulk4)
			c0=$(ticks $PP)
			$PIN0 iperf3 -c $PX -p 25201 -t "$SECS" -P "${PHASE#bulk}" -J >"$W/ip.json" 2>&1
			c1=$(ticks $PP)
			v=$(jq '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100' "$W/ip.json")
			extra="cpu_s=$(((c1 - c0) / CLK))"
			;;
		idle)
			sleep 1
			r0=$(awk '/^VmRSS:/{print $2}' /proc/$PP/status)
			s0=$(awk '$1 ~ /^(TCP|request_sock_TCP|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq|skbuff_head_cache)$/ {s += $2 * $4} END {print s}' /proc/slabinfo)
			$PIN0 "$BIN/idle" -addr $PX:28080 -n "$IDLE_CONNS" >"$W/idle.out" 2>&1 &
			IP=$!
			for _ in $(seq 600); do grep -qs ready "$W/idle.out" && break; sleep 0.1; done
			sleep 4
			r1=$(awk '/^VmRSS:/{print $2}' /proc/$PP/status)
			s1=$(awk '$1 ~ /^(TCP|request_sock_TCP|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq|skbuff_head_cache)$/ {s += $2 * $4} END {print s}' /proc/slabinfo)
			held=$(awk '/ready/{print $2}' "$W/idle.out")
			v=$(((r1 - r0) * 1024 / held))
			extra="held=$held slab/conn=$(((s1 - s0) / held)) total=$((v + (s1 - s0) / held))"
			kill $IP
			wait $IP 2>/dev/null
			;;
		kill)
			$PIN0 "$BIN/backend" -listen $BE_B &
			BB=$!
			wait_listen $BE_B
			sleep 2.5
			$PIN0 wrk -t1 -c32 -d8s --timeout 5s -H "Connection: close" "http://$PX:28090/" >"$W/wrk" 2>&1 &
			WP=$!
			sleep 3
			if [ "$t" = haproxy ]; then
				res=$("$BIN/watch" -kill $BB -haproxy "$W/ha.sock" -backend http2 -server s2 2>&1)
			else
				res=$("$BIN/watch" -kill $BB -homelab "http://$ADMIN/status" -server $BE_B 2>&1)
			fi
			wait $WP
			wait $BB 2>/dev/null
			v=$(awk '/Socket errors/{gsub(/,/,""); e+=$4+$6+$8+$10} /Non-2xx/{e+=$NF} END{print e+0}' "$W/wrk")
			extra="eject_ms/open=$res $(grep -E 'Socket errors|Non-2xx|requests in' "$W/wrk" | tr -s ' \n' ' ')"
			;;
		esac
		[ "$PHASE" = idle ] && sleep 2
		echo "run $run $n: $v $extra"
		VALS[$n]+="$v "
		stopp
	done
done
for t in "${TARGETS[@]}"; do
	n=$(name "$t")
	echo "median $n: $(printf '%s\n' ${VALS[$n]} | sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}') (all: ${VALS[$n]})"
done
