#!/usr/bin/env bash
# make demo, part 2: examples/local.toml (alpha and beta on 127.0.0.1)
# replicating volume r0 under protocol C. It writes through alpha, shows
# beta byte-identical, disconnects and writes, reconnects and shows a
# partial resync, SIGKILLs beta under a 10 MiB write and shows the resync
# moves about 10 MiB (not 256), makes a split brain on purpose and
# resolves it with --discard-my-data, then verifies online: identical, and
# then one block damaged behind blkrep's back is found, marked and resynced.
# Every step is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${DEMO_DIR:-$root/demo}/replicated
bin=$root/bin
size=268435456

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
fail() {
	echo "demo: FAILED: $*" >&2
	for n in alpha beta; do [ -f "$dir/$n.log" ] && { echo "--- $n.log" >&2; tail -15 "$dir/$n.log" >&2; }; done
	exit 1
}

declare -A pids=()
start() { # node
	"$bin/blkrepd" --config "$dir/local.toml" --node "$1" >>"$dir/$1.log" 2>&1 &
	pids[$1]=$!
	for _ in $(seq 100); do
		"$bin/blkrep" --config "$dir/local.toml" --node "$1" status >/dev/null 2>&1 && return 0
		kill -0 "${pids[$1]}" 2>/dev/null || fail "blkrepd $1 exited at start"
		sleep 0.1
	done
	fail "blkrepd $1 did not come up within 10s"
}
stopall() {
	for n in "${!pids[@]}"; do kill -TERM "${pids[$n]}" 2>/dev/null || true; done
	for n in "${!pids[@]}"; do wait "${pids[$n]}" 2>/dev/null || true; done
	pids=()
}
trap stopall EXIT

br() { "$bin/blkrep" --config "$dir/local.toml" --node "$@"; }
peerfield() { # node jq-expression on the first peer
	br "$1" status --json | python3 -c "import json,sys; p=json.load(sys.stdin)['volumes'][0]['peers'][0]; print($2)"
}
wait_established() {
	for _ in $(seq 200); do
		[ "$(peerfield alpha "p['replication']")" = Established ] &&
			[ "$(peerfield beta "p['replication']")" = Established ] && return 0
		sleep 0.1
	done
	fail "alpha and beta did not reach Established within 20s"
}
identical() {
	cmp -n $size alpha-r0.img beta-r0.img >/dev/null || fail "alpha's and beta's disks differ"
	echo "alpha-r0.img and beta-r0.img: the first $size bytes are identical (cmp)"
}
alpha_uri='nbd+unix:///r0?socket=alpha-r0.sock'

say "Two nodes on loopback ($dir): examples/local.toml"
rm -rf "$dir" && mkdir -p "$dir"
cp examples/local.toml "$dir/"
cd "$dir"
grep -vE '^\s*(#|$)' local.toml

say "Start alpha and beta; both start Secondary and connect"
start alpha
start beta
wait_established
run br alpha primary r0
run br beta status

say "Write 32 MiB through alpha's export; protocol C: acknowledged = on both disks"
head -c 32M /dev/urandom >data1.bin
run nbdcopy --flush data1.bin "$alpha_uri"
identical
out=$(nbdinfo 'nbd+unix:///r0?socket=beta-r0.sock' 2>&1) && fail "beta's export accepted a client while Secondary"
echo "beta refuses NBD clients while Secondary (nbdinfo: ${out%%$'\n'*})"

say "Prometheus metrics: the same figures as status (alpha: http://127.0.0.1:9641/metrics)"
metrics=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9641/metrics", timeout=5).read().decode())') || fail "alpha's metrics endpoint did not answer"
grep -E '^blkrep_(volume_role\{.*role="Primary"|peer_replication_state\{.*state="Established"|peer_out_of_sync_bytes|nbd_written_bytes_total)' <<<"$metrics"
grep -q '^blkrep_volume_role{.*role="Primary".*} 1' <<<"$metrics" || fail "alpha's metrics do not show it Primary"

say "Disconnect, write 4 MiB on alpha alone, reconnect: only the 4 MiB resync"
run br alpha disconnect r0
head -c 4M /dev/urandom | nbdcopy --flush - "$alpha_uri"
run br alpha status | sed -n '3,5p'
run br alpha connect r0
wait_established
moved=$(peerfield beta "p['resync']['done_bytes']")
echo "beta received $moved bytes by resync"
[ "$moved" = 4194304 ] || fail "the resync moved $moved bytes, expected 4194304"
identical

say "SIGKILL beta, write 10 MiB, restart beta: the resync moves about 10 MiB, not 256"
kill -9 "${pids[beta]}"; wait "${pids[beta]}" 2>/dev/null || true; unset 'pids[beta]'
head -c 10M /dev/urandom >data2.bin
nbdcopy --flush data2.bin "nbd+unix:///r0?socket=alpha-r0.sock"
start beta
wait_established
run br beta status | sed -n '3,9p'
moved=$(peerfield beta "p['resync']['done_bytes']")
rule=$(peerfield beta "p['handshake']['rule']")
echo "resync moved $moved bytes (rule $rule)"
[ "$moved" -ge 10485760 ] && [ "$moved" -le 12582912 ] || fail "the resync moved $moved bytes, expected about 10 MiB"
identical

say "Split brain on purpose: both disconnected, each Primary, each writes"
run br alpha disconnect r0
run br beta disconnect r0
head -c 1M /dev/urandom | nbdcopy --flush - "$alpha_uri"
run br beta primary r0
head -c 2M /dev/urandom | nbdcopy --flush - 'nbd+unix:///r0?socket=beta-r0.sock'
br alpha connect r0 >/dev/null
br beta connect r0 >/dev/null
for _ in $(seq 100); do
	[ "$(peerfield alpha "p['split_brain']")" = True ] && [ "$(peerfield beta "p['split_brain']")" = True ] && break
	sleep 0.1
done
[ "$(peerfield alpha "p['split_brain']")" = True ] || fail "alpha did not report the split brain"
[ "$(peerfield beta "p['split_brain']")" = True ] || fail "beta did not report the split brain"
run br beta status | sed -n '3,6p'

say "Resolve it: beta's changes are dropped"
run br beta secondary r0
run br beta resync r0 --discard-my-data
run br alpha connect r0
wait_established
run br beta status | sed -n '3,9p'
identical

say "Online verify: compare every block by digest while the volume stays in service"
run timeout 120 "$bin/blkrep" --config local.toml --node alpha verify r0 --wait
[ "$(peerfield alpha "p['verify']['done_bytes']")" = $size ] || fail "the verify did not compare all $size bytes"
[ "$(peerfield alpha "p['verify']['mismatch_bytes']")" = 0 ] || fail "the verify found differences between identical replicas"

say "Damage one block of beta's disk behind blkrep's back; verify finds it, resync repairs it"
run dd if=/dev/urandom of=beta-r0.img bs=4096 seek=1234 count=1 conv=notrunc status=none
run timeout 120 "$bin/blkrep" --config local.toml --node alpha verify r0 --wait || true
mism=$(peerfield alpha "p['verify']['mismatch_bytes']")
oos=$(peerfield alpha "p['out_of_sync_bytes']")
[ "$mism" = 4096 ] && [ "$oos" = 4096 ] || fail "verify: $mism bytes differ and $oos out of sync, expected 4096 and 4096"
cmp -s -n $size alpha-r0.img beta-r0.img && fail "the verify repaired beta silently"
echo "verify marked 4096 bytes out of sync and changed nothing"
run br alpha resync r0
wait_established
for _ in $(seq 100); do [ "$(peerfield alpha "p['out_of_sync_bytes']")" = 0 ] && break; sleep 0.1; done
moved=$(peerfield beta "p['resync']['done_bytes']")
echo "beta received $moved bytes by resync"
[ "$moved" = 4096 ] || fail "the resync after verify moved $moved bytes, expected 4096"
identical

say "Stop both"
stopall
echo "replication demo: OK"
