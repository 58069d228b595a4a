#!/usr/bin/env bash
# bench/lb/run.sh: homelab lb against HAProxy and a direct connection, side
# by side on this machine, interleaved runs. Needs root. Writes the report
# to docs/benchmarks/lb.md (override with REPORT=...). See bench/lb/README.md.
#
#   bench/lb/run.sh                                   # full run, about 17 minutes
#   RUNS=1 LONG_RUNS=1 BULK_SECS=2 HTTP_SECS=2 IDLE_CONNS=2000 REPORT=/tmp/lb.md bench/lb/run.sh   # smoke run
set -u -o pipefail

RUNS=${RUNS:-5}             # (a) bulk and (b) HTTP: runs per target
LONG_RUNS=${LONG_RUNS:-3}   # (c) idle, (d) kill, (e) reload: runs per target
BULK_SECS=${BULK_SECS:-5}
HTTP_SECS=${HTTP_SECS:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
WRK_CONNS=${WRK_CONNS:-32}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REPORT=${REPORT:-$ROOT/docs/benchmarks/lb.md}
W=$(mktemp -d /tmp/lbbench.XXXXXX)
R=$W/results
BIN=$W/bin
mkdir -p "$R" "$BIN"
OUT=$W/out.md

# Addresses: loopback only. Backends on 127.0.0.2, proxies listen on 127.0.0.3.
BE_A=127.0.0.2:18081
BE_B=127.0.0.2:18082
IPERF_BE_HOST=127.0.0.2 IPERF_BE_PORT=15201
PX_HOST=127.0.0.3
PX_IPERF=25201 PX_HTTP=28080 PX_HTTP2=28090
ADMIN=127.0.0.3:29100
HASOCK=$W/haproxy.sock

CLIENT_CPU=0 PROXY_CPU=1
# Benchmark processes run at a raised priority (nice -10 by default) so the
# other work on a shared machine disturbs them less; NICE=0 turns it off.
NICE=${NICE:--10}
PIN0="nice -n $NICE taskset -c $CLIENT_CPU"
PIN1="nice -n $NICE taskset -c $PROXY_CPU"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (pinning, priority, sysctl, apt-get)"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (client+backend on CPU 0, proxy on CPU 1)"

# --- tools -----------------------------------------------------------------
missing=()
for t in haproxy iperf3 wrk jq curl nstat; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
	pkgs=()
	for t in "${missing[@]}"; do [ "$t" = nstat ] && pkgs+=(iproute2) || pkgs+=("$t"); done
	log "installing ${pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null || die "apt-get install ${pkgs[*]}"
fi
command -v go >/dev/null || die "go is not on PATH"

log "building homelab-lb and the bench tools into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/homelab-lb ./bench/lb/backend ./bench/lb/idle ./bench/lb/watch) || die "go build"

# --- host settings (restored on exit) --------------------------------------
# Two descriptors per proxied connection: raise the limit as far as allowed.
# (In a container without CAP_SYS_RESOURCE the hard limit caps it; the idle
# phase then holds as many connections as the proxy's descriptors allow.)
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" || die "cannot raise ulimit -n"
FDLIM=$(ulimit -n)
IDLE_WANTED=$IDLE_CONNS
# HAProxy needs 2 x maxconn + 2 x maxpipes (64 here) + a few descriptors.
HA_MAXCONN=$(((FDLIM - 300) / 2))
[ "$HA_MAXCONN" -gt 40000 ] && HA_MAXCONN=40000
if [ "$IDLE_CONNS" -gt $((HA_MAXCONN - 50)) ]; then
	IDLE_CONNS=$((HA_MAXCONN - 50))
	log "open-file limit is $FDLIM: holding $IDLE_CONNS idle connections instead of $IDLE_WANTED"
fi
OLD_PORTS=$(cat /proc/sys/net/ipv4/ip_local_port_range)
sysctl -qw net.ipv4.ip_local_port_range="1024 65000"

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.3
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	sysctl -qw net.ipv4.ip_local_port_range="$OLD_PORTS"
	log "work files kept in $W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { local p=$1 n=() q; for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || n+=("$q"); done; PIDS=("${n[@]}"); }
stop() { # stop PID: TERM, then KILL after 3 s; waits for it
	local p=$1 i
	kill "$p" 2>/dev/null
	for i in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	forget "$p"
}
wait_listen() { # wait_listen HOST:PORT
	local i
	for i in $(seq 200); do
		ss -Hltn "src $1" | grep -q . && return 0
		sleep 0.05
	done
	die "nothing listens on $1"
}

# --- backends (CPU 0) ------------------------------------------------------
start_backend() { # start_backend ADDR -> sets BPID
	$PIN0 "$BIN/backend" -listen "$1" 2>>"$W/backend.log" &
	BPID=$!
	PIDS+=("$BPID")
	wait_listen "$1"
}
start_backend $BE_A
$PIN0 iperf3 -s -B $IPERF_BE_HOST -p $IPERF_BE_PORT >"$W/iperf3-server.log" 2>&1 &
PIDS+=($!)
wait_listen $IPERF_BE_HOST:$IPERF_BE_PORT

# --- proxy configs ---------------------------------------------------------
# HAProxy: one thread, layer 4 (mode tcp), same timeouts, checks and splice
# pipe size (256 KiB) as ours.
haproxy_cfg() { # haproxy_cfg splice|nosplice [weight of s2] > file
	local splice="option splice-auto"
	[ "$1" = nosplice ] && splice=$'no option splice-auto\n  no option splice-request\n  no option splice-response'
	cat <<EOF
global
  nbthread 1
  maxconn $HA_MAXCONN
  maxpipes 64
  tune.pipesize 262144
  stats socket $HASOCK mode 600 level admin expose-fd listeners
  log stderr format short local0 err
defaults
  mode tcp
  log global
  maxconn $HA_MAXCONN
  timeout connect 3s
  timeout client 10m
  timeout server 10m
  timeout check 500ms
  retries 3
  option redispatch
  $splice
frontend iperf
  bind $PX_HOST:$PX_IPERF
  default_backend iperf
backend iperf
  server s1 $IPERF_BE_HOST:$IPERF_BE_PORT
frontend http
  bind $PX_HOST:$PX_HTTP
  default_backend http
backend http
  server s1 $BE_A
frontend http2
  bind $PX_HOST:$PX_HTTP2
  default_backend http2
backend http2
  balance roundrobin
  server s1 $BE_A check inter 1s fall 2 rise 2
  server s2 $BE_B check inter 1s fall 2 rise 2 weight ${2:-1}
EOF
}
# homelab lb: the same frontends, backends and checks. Passive ejection is
# on (its default: 3 failed connects, or one refused); HAProxy has no
# equivalent enabled. The two-server backend has replayOnReset (opt-in:
# wrk's GETs are idempotent); HAProxy's mode tcp has no equivalent (its
# retry-on empty-response exists in mode http only).
homelab_cfg() { # homelab_cfg [weight of s2] > file
	cat <<EOF
admin:
  listen: $ADMIN
timeouts:
  connect: 3s
  idle: 10m
frontends:
  - name: iperf
    listen: ["$PX_HOST:$PX_IPERF"]
    backend: iperf
  - name: http
    listen: ["$PX_HOST:$PX_HTTP"]
    backend: http
  - name: http2
    listen: ["$PX_HOST:$PX_HTTP2"]
    backend: http2
backends:
  - name: iperf
    servers: [{address: "$IPERF_BE_HOST:$IPERF_BE_PORT"}]
  - name: http
    servers: [{address: "$BE_A"}]
  - name: http2
    balance: roundrobin
    servers: [{address: "$BE_A"}, {address: "$BE_B", weight: ${1:-1}}]
    healthCheck: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2}
    replayOnReset: true
EOF
}
haproxy_cfg splice >"$W/haproxy-splice.cfg"
haproxy_cfg nosplice >"$W/haproxy-nosplice.cfg"
haproxy_cfg splice 2 >"$W/haproxy-splice-w2.cfg"
homelab_cfg >"$W/homelab.yaml"
homelab_cfg 2 >"$W/homelab-w2.yaml"
haproxy -c -q -f "$W/haproxy-splice.cfg" || die "haproxy config check"
"$BIN/homelab-lb" check --config "$W/homelab.yaml" >/dev/null || die "homelab-lb config check"

# --- proxies (CPU 1) -------------------------------------------------------
# start_proxy direct|haproxy-splice|haproxy-nosplice|homelab [master]
# sets PPID_ (the process whose CPU and memory are measured; empty for
# direct) and, for HAProxy in master-worker mode, PMASTER.
PPID_="" PMASTER=""
start_proxy() {
	PPID_="" PMASTER=""
	case $1 in
	direct) return 0 ;;
	haproxy-splice | haproxy-nosplice)
		local cfg=$W/${1}.cfg
		if [ "${2:-}" = master ]; then
			cp "$cfg" "$W/haproxy-live.cfg"
			$PIN1 haproxy -W -db -f "$W/haproxy-live.cfg" 2>>"$W/haproxy.log" &
			PMASTER=$!
			PIDS+=("$PMASTER")
		else
			$PIN1 haproxy -db -f "$cfg" 2>>"$W/haproxy.log" &
			PPID_=$!
			PIDS+=("$PPID_")
		fi
		;;
	homelab)
		cp "$W/homelab.yaml" "$W/homelab-live.yaml"
		GOMAXPROCS=1 $PIN1 "$BIN/homelab-lb" run --config "$W/homelab-live.yaml" --watch=-1s --log-level warn 2>>"$W/homelab.log" &
		PPID_=$!
		PIDS+=("$PPID_")
		;;
	*) die "unknown target $1" ;;
	esac
	wait_listen $PX_HOST:$PX_HTTP
	wait_listen $PX_HOST:$PX_IPERF
	if [ -n "$PMASTER" ]; then
		local i
		for i in $(seq 50); do PPID_=$(pgrep -P "$PMASTER" | head -1); [ -n "$PPID_" ] && break; sleep 0.1; done
	fi
}
stop_proxy() {
	if [ -n "$PMASTER" ]; then stop "$PMASTER"; elif [ -n "$PPID_" ]; then stop "$PPID_"; fi
	PPID_="" PMASTER=""
	sleep 0.2
}
# addresses a client uses for each target
iperf_addr() { if [ "$1" = direct ]; then echo "$IPERF_BE_HOST $IPERF_BE_PORT"; else echo "$PX_HOST $PX_IPERF"; fi; }
http_url() { if [ "$1" = direct ]; then echo "http://$BE_A/"; else echo "http://$PX_HOST:$PX_HTTP/"; fi; }

# --- measurements ----------------------------------------------------------
CLK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime, all threads
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# socket-related slab caches (bytes, active objects x object size): the
# objects an open TCP socket pins in the kernel.
slab_sock() { awk '$1 ~ /^(TCP|request_sock_TCP|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq|skbuff_head_cache)$/ {s += $2 * $4} END {print s + 0}' /proc/slabinfo; }
slab_total() { awk '/^Slab:/{print $2 * 1024}' /proc/meminfo; }
retrans() { nstat -a TcpRetransSegs 2>/dev/null | awk '$1 == "TcpRetransSegs" {print $2; f = 1} END {if (!f) print 0}'; }
put() { echo "$4" >>"$R/$1.$2.$3"; } # put PHASE TARGET METRIC VALUE
# wrk output -> "requests errors p50us p90us p99us rps"
parse_wrk() {
	awk '
	function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /m$/) return v * 60e6; if (v ~ /s$/) return v * 1e6; return v }
	/^ +50%/ { p50 = us($2) } /^ +90%/ { p90 = us($2) } /^ +99%/ { p99 = us($2) }
	/requests in/ { req = $1 }
	/Socket errors/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
	/Non-2xx/ { err += $NF }
	/^Requests\/sec/ { rps = $2 }
	END { printf "%d %d %.0f %.0f %.0f %.0f\n", req, err, p50, p90, p99, rps }' "$1"
}
run_wrk() { # run_wrk URL SECS close|keepalive OUTFILE
	local hdr=()
	[ "$3" = close ] && hdr=(-H "Connection: close")
	$PIN0 wrk -t1 -c"$WRK_CONNS" -d"$2"s --latency --timeout 5s "${hdr[@]}" "$1" >"$4" 2>&1
}

TARGETS_FAST=(direct haproxy-splice haproxy-nosplice homelab)
TARGETS_LONG=(direct haproxy-splice homelab)
PROXIES=(haproxy-splice homelab)

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
log "load average at start: $LOAD_START"

# (a) bulk throughput ---------------------------------------------------------
log "(a) bulk throughput: iperf3, ${BULK_SECS}s, 1 and 4 streams, $RUNS runs each, interleaved"
for run in $(seq "$RUNS"); do
	for P in 1 4; do
		for t in "${TARGETS_FAST[@]}"; do
			start_proxy "$t"
			read -r h p <<<"$(iperf_addr "$t")"
			c0=0
			[ -n "$PPID_" ] && c0=$(cpu_ticks "$PPID_")
			x0=$(retrans)
			jf=$W/iperf-$P-$t-$run.json
			if $PIN0 iperf3 -c "$h" -p "$p" -t "$BULK_SECS" -P "$P" -J >"$jf" 2>&1; then
				x1=$(retrans)
				gbps=$(jq '.end.sum_received.bits_per_second / 1e9' "$jf")
				bytes=$(jq '.end.sum_received.bytes' "$jf")
				put a "$t" "gbps_P$P" "$gbps"
				put a "$t" "retrans_P$P" "$((x1 - x0))"
				if [ -n "$PPID_" ]; then
					c1=$(cpu_ticks "$PPID_")
					put a "$t" "cpu_per_gb_P$P" "$(awk -v c=$((c1 - c0)) -v k="$CLK" -v b="$bytes" 'BEGIN{printf "%.4f", c / k / (b / 1e9)}')"
				fi
				log "  run $run P$P $t: $(printf %.2f "$gbps") Gbit/s, $((x1 - x0)) retransmitted segments"
			else
				log "  run $run P$P $t: iperf3 failed: $(head -c 300 "$jf")"
			fi
			stop_proxy
		done
	done
done

# (b) short HTTP requests -------------------------------------------------------
log "(b) short HTTP requests: wrk -c$WRK_CONNS ${HTTP_SECS}s, keep-alive and Connection: close, $RUNS runs each, interleaved"
for run in $(seq "$RUNS"); do
	for mode in keepalive close; do
		for t in "${TARGETS_FAST[@]}"; do
			start_proxy "$t"
			c0=0
			[ -n "$PPID_" ] && c0=$(cpu_ticks "$PPID_")
			wf=$W/wrk-b-$mode-$t-$run.txt
			run_wrk "$(http_url "$t")" "$HTTP_SECS" "$mode" "$wf"
			c1=0
			[ -n "$PPID_" ] && c1=$(cpu_ticks "$PPID_")
			read -r req err p50 p90 p99 rps <<<"$(parse_wrk "$wf")"
			if [ "$req" = 0 ]; then
				log "  run $run $mode $t: wrk made no request, run skipped: $(tr '\n' ' ' <"$wf" | head -c 300)"
				stop_proxy
				continue
			fi
			put b "$t" "rps_$mode" "$rps"
			put b "$t" "err_$mode" "$err"
			put b "$t" "p50_$mode" "$p50"
			put b "$t" "p90_$mode" "$p90"
			put b "$t" "p99_$mode" "$p99"
			if [ -n "$PPID_" ]; then
				put b "$t" "cpu_us_$mode" "$(awk -v c=$((c1 - c0)) -v k="$CLK" -v n="$req" 'BEGIN{printf "%.3f", c / k / n * 1e6}')"
			fi
			log "  run $run $mode $t: $rps req/s, errors $err, p99 ${p99}us, proxy CPU $(((c1 - c0) * 1000 / CLK)) ms"
			stop_proxy
		done
	done
done

# (c) idle connections ----------------------------------------------------------
log "(c) $IDLE_CONNS idle connections held, $LONG_RUNS runs each, interleaved"
for run in $(seq "$LONG_RUNS"); do
	for t in "${TARGETS_LONG[@]}"; do
		start_proxy "$t"
		sleep 1
		r0=0 r1=0 f0=0 f1=0
		if [ -n "$PPID_" ]; then r0=$(rss_kb "$PPID_"); f0=$(fds "$PPID_"); fi
		s0=$(slab_sock) m0=$(slab_total)
		if [ "$t" = direct ]; then addr=$BE_A; else addr=$PX_HOST:$PX_HTTP; fi
		io=$W/idle-$t-$run.out ie=$W/idle-$t-$run.err
		$PIN0 "$BIN/idle" -addr "$addr" -n "$IDLE_CONNS" >"$io" 2>"$ie" &
		IPID=$!
		PIDS+=("$IPID")
		for i in $(seq 900); do grep -qs ready "$io" && break; sleep 0.1; done
		held=$(awk '/ready/{print $2}' "$io" 2>/dev/null)
		sleep 4 # let the proxy settle (homelab parks directions idle for 1s and returns freed memory; HAProxy releases buffers)
		s1=$(slab_sock) m1=$(slab_total)
		if [ -n "$PPID_" ]; then r1=$(rss_kb "$PPID_"); f1=$(fds "$PPID_"); fi
		n=${held:-0}
		if [ "$n" -gt 0 ]; then
			put c "$t" held "$n"
			put c "$t" slab_sock_per_conn "$(((s1 - s0) / n))"
			put c "$t" slab_total_per_conn "$(((m1 - m0) / n))"
			if [ -n "$PPID_" ]; then
				put c "$t" rss_per_conn "$(((r1 - r0) * 1024 / n))"
				put c "$t" rss_mib "$(awk -v r="$r1" 'BEGIN{printf "%.1f", r / 1024}')"
				put c "$t" fds_delta "$((f1 - f0))"
			fi
		fi
		log "  run $run $t: held $n $(head -c 200 "$ie") RSS +$(((r1 - r0) / 1024)) MiB, fds +$((f1 - f0)), socket slab +$(((s1 - s0) / 1048576)) MiB"
		stop "$IPID"
		stop_proxy
		sleep 2 # closed sockets leave the slab
	done
done

# (d) a backend killed under load ----------------------------------------------
log "(d) backend killed under load (Connection: close), $LONG_RUNS runs each"
for run in $(seq "$LONG_RUNS"); do
	for t in "${PROXIES[@]}"; do
		start_backend $BE_B
		BE_B_PID=$BPID
		start_proxy "$t"
		sleep 2.5 # both servers up (checks every 1s, rise 2)
		wf=$W/wrk-d-$t-$run.txt
		run_wrk "http://$PX_HOST:$PX_HTTP2/" 8 close "$wf" &
		WPID=$!
		sleep 3
		if [ "$t" = homelab ]; then
			res=$("$BIN/watch" -kill "$BE_B_PID" -homelab "http://$ADMIN/status" -server "$BE_B" 2>&1)
		else
			res=$("$BIN/watch" -kill "$BE_B_PID" -haproxy "$HASOCK" -backend http2 -server s2 2>&1)
		fi
		wait "$WPID"
		{ wait "$BE_B_PID"; } 2>/dev/null
		forget "$BE_B_PID"
		read -r req err p50 p90 p99 rps <<<"$(parse_wrk "$wf")"
		read -r ms open <<<"$res"
		put d "$t" failed "$err"
		put d "$t" requests "$req"
		if [[ $ms =~ ^[0-9]+$ ]]; then
			put d "$t" eject_ms "$ms"
			put d "$t" open_at_kill "$open"
		fi
		log "  run $run $t: $req requests, $err failed, $open connections open to the killed server, ejected after $ms ms"
		stop_proxy
	done
done

# (e) reload under load --------------------------------------------------------
log "(e) reload under load: 5 reloads during a 10s wrk, Connection: close and keep-alive, $LONG_RUNS runs each"
start_backend $BE_B
for run in $(seq "$LONG_RUNS"); do
	for mode in close keepalive; do
		for t in "${PROXIES[@]}"; do
			start_proxy "$t" master
			sleep 2.5
			wf=$W/wrk-e-$mode-$t-$run.txt
			run_wrk "http://$PX_HOST:$PX_HTTP2/" 10 "$mode" "$wf" &
			WPID=$!
			sleep 1
			for i in 1 2 3 4 5; do
				# alternate a server weight so every reload changes something
				if [ "$t" = homelab ]; then
					if [ $((i % 2)) = 1 ]; then cp "$W/homelab-w2.yaml" "$W/homelab-live.yaml"; else cp "$W/homelab.yaml" "$W/homelab-live.yaml"; fi
					kill -HUP "$PPID_"
				else
					if [ $((i % 2)) = 1 ]; then cp "$W/haproxy-splice-w2.cfg" "$W/haproxy-live.cfg"; else cp "$W/haproxy-splice.cfg" "$W/haproxy-live.cfg"; fi
					kill -USR2 "$PMASTER"
				fi
				sleep 1.5
			done
			wait "$WPID"
			if [ "$t" = homelab ]; then
				reloads=$(curl -s "http://$ADMIN/status" | jq .reloads)
			else
				reloads=$(grep -c "($PMASTER) : Reloading HAProxy" "$W/haproxy.log")
			fi
			read -r req err p50 p90 p99 rps <<<"$(parse_wrk "$wf")"
			put e "$t" "failed_$mode" "$err"
			put e "$t" "requests_$mode" "$req"
			put e "$t" "reloads_$mode" "$reloads"
			log "  run $run $mode $t: $req requests, $err failed, reloads done: $reloads of 5"
			stop_proxy
		done
	done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - T0))
log "done in ${ELAPSED}s; load average at end: $LOAD_END"

# --- report ------------------------------------------------------------------
# st PHASE TARGET METRIC -> "median min max n" (or "- - - 0")
st() {
	local f=$R/$1.$2.$3
	[ -s "$f" ] || { echo "- - - 0"; return; }
	sort -g "$f" | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR], NR}'
}
med() { st "$@" | cut -d' ' -f1; }
sum() { local f=$R/$1.$2.$3; if [ -s "$f" ]; then awk '{s += $1} END {print s}' "$f"; else echo -; fi; }
# cell PHASE TARGET METRIC FORMAT -> "median (min–max)"
cell() {
	local m lo hi n
	read -r m lo hi n <<<"$(st "$1" "$2" "$3")"
	[ "$n" = 0 ] && { echo "–"; return; }
	awk -v m="$m" -v lo="$lo" -v hi="$hi" -v f="$4" 'BEGIN{printf f " (" f "–" f ")", m, lo, hi}'
}
fmt() { awk -v v="$1" -v f="$2" 'BEGIN{ if (v == "-") print "–"; else printf f, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }
best() { # best max|min V1 V2 ...
	local how=$1; shift
	printf '%s\n' "$@" | grep -v '^-$' | sort -g | { if [ "$how" = max ]; then tail -1; else head -1; fi; } | grep . || echo -
}

{
	echo "# Benchmark: homelab lb against HAProxy"
	echo
	echo "Generated by \`bench/lb/run.sh\` (see \`bench/lb/README.md\`); the analysis at the end comes from \`bench/lb/notes.md\`."
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), the run took ${ELAPSED}s"
	echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
	echo "- load average (1, 5, 15 min): $LOAD_START at start, $LOAD_END at end. The load average includes the benchmark's own processes (the machine may also be shared); runs are interleaved (direct, HAProxy, homelab, direct, ...) so that noise hits every target alike, and benchmark processes run at \`nice -n $NICE\`."
	echo "- versions: $(haproxy -v | head -1 | cut -d' ' -f1-3), $(iperf3 -v | head -1 | cut -d' ' -f1-2), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(go version | cut -d' ' -f3), homelab $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- internal/lb cmd/homelab-lb || echo ' (with uncommitted changes in internal/lb)')"
	echo "- pinning: client and backends on CPU $CLIENT_CPU, the proxy on CPU $PROXY_CPU (\`taskset\`); HAProxy \`nbthread 1\`, \`mode tcp\`, \`tune.pipesize 262144\` (as ours); homelab-lb \`GOMAXPROCS=1\`."
	echo "- runs: $RUNS per target for (a) and (b), $LONG_RUNS for (c), (d), (e); cells are \`median (min–max)\`."
	echo
	echo "## (a) Bulk throughput (iperf3, ${BULK_SECS}s)"
	echo
	echo "| target | 1 stream Gbit/s | 4 streams Gbit/s | proxy CPU s/GB, 1 stream | proxy CPU s/GB, 4 streams | TCP retransmits, 1 / 4 streams |"
	echo "|---|---|---|---|---|---|"
	for t in "${TARGETS_FAST[@]}"; do
		echo "| $t | $(cell a $t gbps_P1 %.2f) | $(cell a $t gbps_P4 %.2f) | $(cell a $t cpu_per_gb_P1 %.3f) | $(cell a $t cpu_per_gb_P4 %.3f) | $(med a $t retrans_P1) / $(med a $t retrans_P4) |"
	done
	echo
	echo "## (b) Short HTTP requests (wrk -t1 -c$WRK_CONNS, ${HTTP_SECS}s, small Go backend)"
	echo
	echo "Proxy CPU per request is (utime+stime of the proxy process)/requests. With \`Connection: close\` every request is a new connection (client side and server side), so it is the CPU per new connection."
	echo
	for mode in keepalive close; do
		if [ $mode = keepalive ]; then echo "### keep-alive"; else echo "### Connection: close"; fi
		echo
		echo "| target | req/s | proxy CPU µs/request | p50 µs | p90 µs | p99 µs | failed (sum) |"
		echo "|---|---|---|---|---|---|---|"
		for t in "${TARGETS_FAST[@]}"; do
			echo "| $t | $(cell b $t rps_$mode %.0f) | $(cell b $t cpu_us_$mode %.2f) | $(cell b $t p50_$mode %.0f) | $(cell b $t p90_$mode %.0f) | $(cell b $t p99_$mode %.0f) | $(sum b $t err_$mode) |"
		done
		echo
	done
	echo "## (c) $IDLE_CONNS idle connections"
	echo
	[ "$IDLE_CONNS" != "$IDLE_WANTED" ] && echo "($IDLE_WANTED were asked for; the open-file hard limit here is $FDLIM and cannot be raised (no CAP_SYS_RESOURCE in this container), and a proxy needs two descriptors per connection.)" && echo
	echo "Each connection made one HTTP request, then stays open and idle. RSS and descriptors are the proxy's; slab is system-wide (client and backend sockets too), per connection held. \"Socket slab\" sums the caches an open TCP socket uses (TCP, sock_inode_cache, filp, dentry, eventpoll_epi/pwq, skbuff_head_cache, request_sock_TCP); \"all slab\" is /proc/meminfo Slab (noisier: other processes allocate too)."
	echo
	echo "| target | held | proxy RSS after, MiB | proxy fds added | proxy RSS B/conn | socket slab B/conn | all slab B/conn |"
	echo "|---|---|---|---|---|---|---|"
	for t in "${TARGETS_LONG[@]}"; do
		echo "| $t | $(med c $t held) | $(cell c $t rss_mib %.1f) | $(cell c $t fds_delta %.0f) | $(cell c $t rss_per_conn %.0f) | $(cell c $t slab_sock_per_conn %.0f) | $(cell c $t slab_total_per_conn %.0f) |"
	done
	echo
	direct_slab=$(med c direct slab_sock_per_conn)
	echo "Memory per idle connection attributable to the proxy = proxy RSS/conn + (socket slab/conn − the direct run's socket slab/conn, $direct_slab B, i.e. the client's and the backend's sockets):"
	echo
	echo "| target | RSS B/conn | proxy's slab B/conn | total B/conn |"
	echo "|---|---|---|---|"
	declare -A MEMC
	for t in haproxy-splice homelab; do
		rs=$(med c $t rss_per_conn) sl=$(med c $t slab_sock_per_conn)
		ps=$(awk -v s="$sl" -v d="$direct_slab" 'BEGIN{ if (s == "-" || d == "-") print "-"; else printf "%.0f", s - d }')
		MEMC[$t]=$(awk -v r="$rs" -v p="$ps" 'BEGIN{ if (r == "-" || p == "-") print "-"; else printf "%.0f", r + p }')
		echo "| $t | $rs | $ps | ${MEMC[$t]} |"
	done
	echo
	echo "## (d) A backend killed under load"
	echo
	echo "Two backends (round robin), TCP health checks every 1s, fall 2, rise 2 on both proxies; HAProxy with \`retries 3\` and \`option redispatch\`; homelab lb also ejects passively after 3 failed connects or one refused connect (its default; HAProxy's \`observe layer4\` is not enabled) and has \`replayOnReset\` on (a connection the killed server resets before answering is replayed on the other server; opt-in, HAProxy's \`mode tcp\` has no equivalent). wrk -c$WRK_CONNS with \`Connection: close\` runs 8s; after 3s one backend gets SIGKILL. Failed = wrk socket errors + non-2xx. \"Open at kill\" is the proxy's count of connections open to that server just before the kill: requests already forwarded to it; those the server had read when it died cannot be replayed by a layer 4 proxy. Time to eject is from the kill until the proxy's status (homelab \`/status\`, HAProxy \`show stat\`) shows the server not up."
	echo
	echo "| target | requests | failed per run | failed (sum) | open at kill | time to eject, ms |"
	echo "|---|---|---|---|---|---|"
	for t in "${PROXIES[@]}"; do
		echo "| $t | $(cell d $t requests %.0f) | $(cell d $t failed %.0f) | $(sum d $t failed) | $(cell d $t open_at_kill %.0f) | $(cell d $t eject_ms %.0f) |"
	done
	echo
	echo "## (e) Reload under load"
	echo
	echo "wrk -c$WRK_CONNS for 10s against two backends; five reloads 1.5s apart, each changing a server weight. homelab lb: new file + SIGHUP. HAProxy: master-worker (\`-W\`), new file + SIGUSR2 to the master, listening sockets handed over through \`expose-fd listeners\`. \"Reloads\" counts the reloads the proxy reported (homelab \`/status\` reloads; HAProxy master \"Reloading HAProxy\" lines)."
	echo
	echo "| target | mode | requests | failed per run | failed (sum) | reloads done per run |"
	echo "|---|---|---|---|---|---|"
	for t in "${PROXIES[@]}"; do
		for mode in close keepalive; do
			echo "| $t | $mode | $(cell e $t requests_$mode %.0f) | $(cell e $t failed_$mode %.0f) | $(sum e $t failed_$mode) | $(cell e $t reloads_$mode %.0f) |"
		done
	done
	echo
	echo "## Ratios against the targets"
	echo
	echo "homelab lb / HAProxy, medians of this run. \"vs best\" compares with the better of HAProxy's splice and no-splice variants for that measurement; the target is judged on it."
	echo
	echo "| measurement | homelab | HAProxy splice | HAProxy no splice | ratio vs splice | ratio vs no splice | ratio vs best | target | met |"
	echo "|---|---|---|---|---|---|---|---|---|"
	row() { # row LABEL HOMELAB HS HN BETTER(max|min) TARGETOP TARGET FMT
		local b rb ok
		b=$(best "$5" "$3" "$4")
		rb=$(ratio "$2" "$b")
		ok=$(awk -v r="$rb" -v op="$6" -v t="$7" 'BEGIN{ if (r == "–") print "–"; else if ((op == "≥" && r + 0 >= t) || (op == "≤" && r + 0 <= t)) print "yes"; else print "**no**" }')
		echo "| $1 | $(fmt "$2" "$8") | $(fmt "$3" "$8") | $(fmt "$4" "$8") | $(ratio "$2" "$3") | $(ratio "$2" "$4") | $rb | $6 $7 | $ok |"
	}
	row "bulk, 1 stream (Gbit/s)" "$(med a homelab gbps_P1)" "$(med a haproxy-splice gbps_P1)" "$(med a haproxy-nosplice gbps_P1)" max "≥" 1.3 %.2f
	row "bulk, 4 streams (Gbit/s)" "$(med a homelab gbps_P4)" "$(med a haproxy-splice gbps_P4)" "$(med a haproxy-nosplice gbps_P4)" max "≥" 1.3 %.2f
	row "CPU per keep-alive request (µs)" "$(med b homelab cpu_us_keepalive)" "$(med b haproxy-splice cpu_us_keepalive)" "$(med b haproxy-nosplice cpu_us_keepalive)" min "≤" 1.0 %.2f
	row "CPU per new connection (µs)" "$(med b homelab cpu_us_close)" "$(med b haproxy-splice cpu_us_close)" "$(med b haproxy-nosplice cpu_us_close)" min "≤" 1.1 %.2f
	row "memory per idle connection (B)" "${MEMC[homelab]}" "${MEMC[haproxy-splice]}" "-" min "≤" 1.0 %.0f
	echo
	fk=$(sum d homelab failed) fh=$(sum d haproxy-splice failed)
	ok=$(sum d homelab open_at_kill) oh=$(sum d haproxy-splice open_at_kill)
	rk=$(($(sum e homelab failed_close) + $(sum e homelab failed_keepalive)))
	rh=$(($(sum e haproxy-splice failed_close) + $(sum e haproxy-splice failed_keepalive)))
	echo "| zero-failure targets (sums over all runs) | homelab | HAProxy | target | met |"
	echo "|---|---|---|---|---|"
	echo "| failed requests, backend kill | $fk (with $ok open to the killed server) | $fh (with $oh open to the killed server) | 0 | $([ "$fk" = 0 ] && echo yes || echo '**no**') |"
	echo "| failed requests, reload (both modes) | $rk | $rh | 0 | $([ "$rk" = 0 ] && echo yes || echo '**no**') |"
	echo
} >"$OUT"

NOTES=$ROOT/bench/lb/notes.md # hand-written analysis appended to the report
mkdir -p "$(dirname "$REPORT")"
{
	cat "$OUT"
	if [ -f "$NOTES" ]; then cat "$NOTES"; fi
} >"$REPORT"
cat "$OUT"
log "report written to $REPORT"
