#!/usr/bin/env bash
# Benchmark of the local provider on the reference lab, side by side with a
# peer: the same namespaces, bridges, veth pairs, addresses, routes and
# nftables rulesets built by a shell script with ip(8) and nft(8) (no
# daemons). Writes docs/benchmarks/local.md.
#
#   sudo bench/local/run.sh [RUNS]      (default 5 runs)
#
# Needs root, go, ip and nft. Uses a lab named "bench" in a temporary folder.
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/docs/benchmarks/local.md
WORK=$(mktemp -d /tmp/homelab-bench.XXXXXX)
LAB=bench
trap 'cd /; "$WORK/homelab" destroy -f "$WORK/lab/lab.yaml" --yes >/dev/null 2>&1 || true; peer_down >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
# HOMELAB_BIN runs a prebuilt binary instead of building ./cmd/homelab.
if [ -n "${HOMELAB_BIN:-}" ]; then cp "$HOMELAB_BIN" "$WORK/homelab"; else (cd "$ROOT" && go build -o "$WORK/homelab" ./cmd/homelab); fi
HL=$WORK/homelab
export HOMELAB_IDENTITY=$WORK/identity.txt
mkdir -p "$WORK/lab"
"$HL" init -f "$WORK/lab/lab.yaml" >/dev/null
sed -i "s/^name: lab$/name: $LAB/" "$WORK/lab/lab.yaml"
"$HL" render -f "$WORK/lab/lab.yaml" --out "$WORK/out" >/dev/null

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# --- the peer: ip(8) and nft(8) ------------------------------------------
NSS="host internet vpn-client vpn lb manager cp-1 worker-1 worker-2"
peer_up() {
	for n in $NSS; do ip netns add "p$LAB-$n"; ip -n "p$LAB-$n" link set lo up; done
	H="ip -n p$LAB-host"
	ip netns exec "p$LAB-host" sysctl -qw net.ipv4.ip_forward=1
	ip netns exec "p$LAB-internet" sysctl -qw net.ipv4.ip_forward=1
	ip netns exec "p$LAB-vpn" sysctl -qw net.ipv4.ip_forward=1
	for b in vmbr0:192.168.1.254/24 vmbr1:10.10.1.1/24 vmbr2:10.10.2.1/24; do
		$H link add "${b%%:*}" type bridge; $H addr add "${b#*:}" dev "${b%%:*}"; $H link set "${b%%:*}" up
	done
	$H route add default via 192.168.1.1 dev vmbr0 onlink
	# guest ns, host-side name, bridge, inside name, address, gateway
	while read -r g hn br in addr gw; do
		$H link add "$hn" type veth peer name "$in" netns "p$LAB-$g"
		$H link set "$hn" master "$br" up
		ip -n "p$LAB-$g" addr add "$addr" dev "$in"; ip -n "p$LAB-$g" link set "$in" up
		[ "$gw" = - ] || ip -n "p$LAB-$g" route add default via "$gw" dev "$in"
	done <<-T
	vpn vpnn0 vmbr0 wan 192.168.1.240/24 192.168.1.1
	vpn vpnn1 vmbr1 admin 10.10.1.2/24 -
	lb lbn0 vmbr0 wan 192.168.1.241/24 192.168.1.1
	lb lbn1 vmbr2 apps 10.10.2.3/24 -
	manager mgrn0 vmbr1 admin 10.10.1.5/24 10.10.1.1
	cp-1 c1n0 vmbr1 admin 10.10.1.10/24 10.10.1.1
	worker-1 w1n0 vmbr1 admin 10.10.1.20/24 10.10.1.1
	worker-1 w1n1 vmbr2 apps 10.10.2.20/24 -
	worker-2 w2n0 vmbr1 admin 10.10.1.21/24 10.10.1.1
	worker-2 w2n1 vmbr2 apps 10.10.2.21/24 -
	internet inet vmbr0 wan 192.168.1.1/24 -
	T
	ip -n "p$LAB-internet" route add 10.10.1.0/24 via 192.168.1.254
	ip -n "p$LAB-internet" route add 10.10.2.0/24 via 192.168.1.254
	ip -n "p$LAB-internet" link add client type veth peer name uplink netns "p$LAB-vpn-client"
	ip -n "p$LAB-internet" addr add 198.18.0.1/30 dev client; ip -n "p$LAB-internet" link set client up
	ip -n "p$LAB-vpn-client" addr add 198.18.0.2/30 dev uplink; ip -n "p$LAB-vpn-client" link set uplink up
	ip -n "p$LAB-vpn-client" route add default via 198.18.0.1
	ip netns exec "p$LAB-host" nft -f "$WORK/out/nftables/host.nft"
	ip netns exec "p$LAB-lb" nft -f "$WORK/out/nftables/lb.nft"
	ip netns exec "p$LAB-vpn" nft -f "$WORK/out/nftables/vpn.nft"
}
peer_down() { for n in $NSS; do ip netns del "p$LAB-$n"; done; }

# --- homelab -------------------------------------------------------------
# mem_kib FIELD: the sum of a /proc/PID/smaps_rollup field (Rss or Pss)
# over every process in the lab's namespaces and the supervisor. Rss counts
# the shared homelab binary once per process; Pss splits shared pages among
# the processes that map them, so its sum is the memory the lab adds.
mem_kib() {
	local total=0 pids pid
	pids=$(for n in $(ip netns list | awk '{print $1}' | grep "^$LAB-"); do ip netns pids "$n"; done
		cat "$WORK/lab/.homelab/local/run/supervisor.pid" 2>/dev/null || true)
	for pid in $pids; do
		total=$((total + $(awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
	done
	echo "$total"
}
count_procs() {
	for n in $(ip netns list | awk '{print $1}' | grep "^$LAB-"); do ip netns pids "$n"; done | wc -l
}

LOAD0=$(cut -d' ' -f1 /proc/loadavg)
declare -a A N D P Q R S
for i in $(seq 1 "$RUNS"); do
	t0=$(now); "$HL" apply -f "$WORK/lab/lab.yaml" >/dev/null 2>&1; t1=$(now)
	"$HL" apply -f "$WORK/lab/lab.yaml" >/dev/null 2>&1; t2=$(now)
	"$HL" verify -f "$WORK/lab/lab.yaml" >/dev/null 2>&1 || { echo "verify failed on run $i" >&2; "$HL" verify -f "$WORK/lab/lab.yaml" >&2 || true; exit 1; }
	sleep 1
	R+=("$(mem_kib Rss)"); S+=("$(mem_kib Pss)"); procs=$(( $(count_procs) + 1 ))
	t3=$(now); "$HL" destroy -f "$WORK/lab/lab.yaml" --yes >/dev/null 2>&1; t4=$(now)
	t5=$(now); peer_up; t6=$(now); peer_down; t7=$(now)
	A+=("$(ms "$t0" "$t1")"); N+=("$(ms "$t1" "$t2")"); D+=("$(ms "$t3" "$t4")")
	P+=("$(ms "$t5" "$t6")"); Q+=("$(ms "$t6" "$t7")")
	echo "run $i: apply ${A[-1]} ms, no-op apply ${N[-1]} ms, destroy ${D[-1]} ms, rss $((R[-1] / 1024)) MiB, pss $((S[-1] / 1024)) MiB ($procs processes); peer up ${P[-1]} ms, down ${Q[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mA=$(median "${A[@]}"); mN=$(median "${N[@]}"); mD=$(median "${D[@]}"); mP=$(median "${P[@]}"); mQ=$(median "${Q[@]}")
mR=$(( $(median "${R[@]}") / 1024 )); mS=$(( $(median "${S[@]}") / 1024 ))

LOAD1=$(cut -d' ' -f1 /proc/loadavg)
mkdir -p "$(dirname "$OUT")"
cat >"$OUT" <<MD
# Local provider: apply, destroy and memory of the reference lab

Measured by \`bench/local/run.sh $RUNS\` (median of $RUNS runs) on $(nproc) cores,
kernel $(uname -r), $(date -u +%Y-%m-%d), load average $LOAD0 before and $LOAD1
after (other work shares the machine: compare homelab and the peer within
a run, not across machines). The lab is the reference lab.yaml
(\`homelab init\`): 9 namespaces (host, internet, vpn-client, vpn, lb,
manager, 1 control plane, 2 workers), 3 bridges, 13 veth pairs, 3 nftables
rulesets, and 7 daemons (supervisor, load balancer, WireGuard server and
client, 3 Talos node stand-ins).

The peer is a shell script that builds the same namespaces, bridges, veth
pairs, addresses, routes and rulesets with ip(8) and nft(8), without any
daemon: the plain-tools cost of the topology alone.

| what | homelab | peer (ip + nft) | ratio homelab/peer | target | ratio to target |
|---|---|---|---|---|---|
| apply from nothing (topology + daemons ready) | ${mA} ms | ${mP} ms (topology only) | $(ratio "$mA" "$mP") | 3000 ms | $(ratio "$mA" 3000) |
| destroy | ${mD} ms | ${mQ} ms | $(ratio "$mD" "$mQ") | 1000 ms | $(ratio "$mD" 1000) |
| destroy, fastest run | $(printf '%s\n' "${D[@]}" | sort -n | head -1) ms | $(printf '%s\n' "${Q[@]}" | sort -n | head -1) ms | – | 1000 ms | – |
| apply with nothing to do | ${mN} ms | – | – | – | – |
| memory the lab's processes add (sum of PSS) | ${mS} MiB | – | – | 150 MiB | $(ratio "$mS" 150) |
| sum of RSS (counts the shared binary once per process) | ${mR} MiB | – | – | – | – |

Every run: apply, a second apply (must change nothing), \`homelab verify\`
(must pass), memory summed over every process in the lab's namespaces plus
the supervisor ($procs processes), destroy, then the peer up and down.

Memory: every daemon is the same homelab binary, so most of a process's
RSS is the binary's pages in the page cache, shared by all of them. The sum
of RSS counts those pages once per process; the sum of PSS (proportional
set size, from /proc/PID/smaps_rollup) divides shared pages among the
processes that map them, which makes it the memory the lab adds to the
machine. The target is checked against PSS; RSS is shown for comparison.

Raw runs (ms; MiB):

| run | apply | no-op apply | destroy | PSS | RSS | peer up | peer down |
|---|---|---|---|---|---|---|---|
MD
for i in $(seq 0 $((RUNS - 1))); do
	echo "| $((i + 1)) | ${A[$i]} | ${N[$i]} | ${D[$i]} | $((S[$i] / 1024)) | $((R[$i] / 1024)) | ${P[$i]} | ${Q[$i]} |" >>"$OUT"
done
echo "wrote $OUT" >&2
