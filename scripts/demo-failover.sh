#!/usr/bin/env bash
# make demo, part 3: examples/failover.toml, automatic failover (issue 5).
# alpha, beta and a witness on 127.0.0.1. Nobody runs `blkrep primary`:
# alpha, the preferred node, promotes itself once a majority of the voters
# sees each other. The demo writes through alpha, SIGKILLs it in the middle
# of a stream of writes, measures how long beta takes to become Primary and
# accept writes, checks beta holds every byte alpha acknowledged, writes
# 8 MiB on beta, restarts alpha and shows it come back Secondary and resync
# only what changed (not the 256 MiB volume), the two disks ending
# byte-identical, and the after_promote handler's trace. Every step is
# checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${DEMO_DIR:-$root/demo}/failover
bin=$root/bin
size=268435456
MiB=1048576
chunk=262144 # the writer's request size while alpha dies
nchunks=32   # 8 MiB at offset 8 MiB, one request every 50 ms

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { local c="$*"; printf '$ %s\n' "${c/#br /blkrep --config failover.toml --node }"; "$@"; }
fail() {
	echo "demo: FAILED: $*" >&2
	for n in alpha beta witness; do [ -f "$dir/$n.log" ] && { echo "--- $n.log" >&2; tail -20 "$dir/$n.log" >&2; }; done
	[ -s "$dir/events-beta.txt" ] && { echo "--- blkrep events on beta" >&2; tail -20 "$dir/events-beta.txt" >&2; }
	exit 1
}

for t in qemu-io nbdinfo nbdcopy python3 stdbuf; do
	command -v $t >/dev/null || fail "$t missing: run 'bash scripts/install-deps.sh test' (make demo does)"
done
[ -x "$bin/blkrepd" ] || fail "bin/blkrepd missing: run 'make build' (make demo does)"

declare -A pids=()
helpers=() # background clients (the writer, blkrep events)
start() { # node
	"$bin/blkrepd" --config "$dir/failover.toml" --node "$1" >>"$dir/$1.log" 2>&1 &
	pids[$1]=$!
	for _ in $(seq 100); do
		"$bin/blkrep" --config "$dir/failover.toml" --node "$1" status >/dev/null 2>&1 && return 0
		kill -0 "${pids[$1]}" 2>/dev/null || fail "blkrepd $1 exited at start"
		sleep 0.1
	done
	fail "blkrepd $1 did not come up within 10s"
}
stopall() {
	for p in "${helpers[@]}"; do kill "$p" 2>/dev/null || true; done
	for n in "${!pids[@]}"; do kill -TERM "${pids[$n]}" 2>/dev/null || true; done
	for n in "${!pids[@]}"; do wait "${pids[$n]}" 2>/dev/null || true; done
	for p in "${helpers[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=() helpers=()
}
trap stopall EXIT

br() { "$bin/blkrep" --config "$dir/failover.toml" --node "$@"; }
st() { # node python-expression over v (the volume) and p (its peer); a tuple prints space-separated
	br "$1" status --json 2>/dev/null | python3 -c "import json,sys
v=json.load(sys.stdin)['volumes'][0]; p=(v.get('peers') or [{}])[0]; r=($2)
print(*r) if isinstance(r, tuple) else print(r)"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); } # milliseconds
waitfor() { # seconds what command...
	local limit=$1 what=$2
	local deadline=$((SECONDS + limit))
	shift 2
	until "$@"; do
		[ $SECONDS -lt $deadline ] || fail "$what: not within ${limit}s"
		sleep 0.1
	done
}
in_sync() { # primary secondary: the first Primary, the second Secondary, both UpToDate and connected
	[ "$(st "$1" "v['role'], v['disk']['state'], p['replication'], p['disk'], p['out_of_sync_bytes']")" = "Primary UpToDate Established UpToDate 0" ] &&
		[ "$(st "$2" "v['role'], v['disk']['state'], p['replication'], p['role'], p['out_of_sync_bytes']")" = "Secondary UpToDate Established Primary 0" ]
}
witness_record() { # python-expression over the witness's voter record (docs/failover.md)
	python3 -c "import json
w=json.load(open('witness-r0.failover.json'))['voter']; r=($1)
print(*r) if isinstance(r, tuple) else print(r)" 2>/dev/null
}
beta_in_sync_at_witness() {
	[ "$(witness_record "w.get('primary'), bool(w.get('outdated'))")" = "alpha False" ]
}
identical() {
	cmp -n $size alpha-r0.img beta-r0.img >/dev/null || fail "alpha's and beta's disks differ"
	echo "alpha-r0.img and beta-r0.img: the first $size bytes (the whole data area) are identical (cmp)"
}
alpha_uri='nbd+unix:///r0?socket=alpha-r0.sock'
beta_uri='nbd+unix:///r0?socket=beta-r0.sock'
t_demo=$(now_ms)

say "Three nodes on loopback ($dir): examples/failover.toml"
if [ -S "$dir/alpha.ctl" ] && br alpha status >/dev/null 2>&1; then
	fail "a blkrepd from an earlier demo still runs in $dir; stop it first"
fi
rm -rf "$dir" && mkdir -p "$dir"
cp examples/failover.toml "$dir/"
cd "$dir"
grep -vE '^\s*(#|$)' failover.toml

say "Start alpha, beta and the witness; nobody runs 'blkrep primary'"
t=$(now_ms)
for n in alpha beta witness; do
	echo "\$ blkrepd --config failover.toml --node $n &"
	start $n
done
waitfor 30 "alpha Primary by itself with beta in sync" in_sync alpha beta
echo "alpha is Primary and beta in sync $(secs $(($(now_ms) - t))) after the start:"
grep -h 'promoted by automatic failover' alpha.log | grep -o 'term=.*' | sed 's/^/  alpha.log: promoted by automatic failover, /' || true
# A primary keeps beta "outdated" at the voters until its lease says beta
# is in sync; only then may beta take over (docs/failover.md, the outdate step).
waitfor 10 "the witness to record alpha's lease with beta in sync" beta_in_sync_at_witness
echo "the witness's record: term $(witness_record "w['term']"), primary $(witness_record "w['primary']"), outdated: $(witness_record "w.get('outdated') or 'nobody'")"
run br alpha status | sed '/^    size /,$d'
run br beta status | grep -E '^(r0|    peer) ' || true

say "Operator role changes go through the same rules as the cluster's"
echo "\$ blkrep --config failover.toml --node beta primary r0"
out=$(br beta primary r0 2>&1) && fail "blkrep primary was accepted on beta while alpha is primary"
echo "$out (exit 1)"
echo "$out" | grep -q "run 'blkrep failover r0 --to beta' on alpha" || fail "the refusal does not say what to do"
echo "\$ blkrep --config failover.toml --node alpha primary --force r0"
out=$(br alpha primary --force r0 2>&1) && fail "blkrep primary --force was accepted under automatic failover"
echo "$out (exit 1)"
[ "$(st alpha "v['role']")" = Primary ] || fail "alpha is no longer Primary"

say "Write 8 MiB through alpha (protocol C: acknowledged = on both disks)"
head -c 8M /dev/urandom >data1.bin
run nbdcopy --flush data1.bin "$alpha_uri"
cmp -n $((8 * MiB)) data1.bin beta-r0.img >/dev/null || fail "beta's disk lacks what alpha acknowledged"
echo "beta-r0.img holds the 8 MiB (cmp)"
out=$(nbdinfo "$beta_uri" 2>&1) && fail "beta's export accepted a client while Secondary"
echo "beta refuses NBD clients while Secondary (nbdinfo: ${out%%$'\n'*})"

say "SIGKILL alpha in the middle of a stream of writes"
# blkrep events on beta: what beta sees from now on.
br beta events >events-beta.txt 2>&1 &
helpers+=($!)
head -c $((nchunks * chunk)) /dev/urandom >data2.bin
split -b $chunk -d -a 2 data2.bin chunk.
cmds=()
for i in $(seq 0 $((nchunks - 1))); do
	cmds+=(-c "write -s chunk.$(printf %02d "$i") $((8 * MiB + i * chunk)) $chunk" -c 'sleep 50')
done
echo "\$ qemu-io -f raw '$alpha_uri' -c 'write -s chunk.00 8M 256k' -c 'sleep 50' ... ($nchunks writes of 256 KiB)"
timeout 60 stdbuf -oL qemu-io -f raw "$alpha_uri" "${cmds[@]}" >writer.out 2>&1 &
writer=$!
helpers+=($writer)
for _ in $(seq 500); do
	[ "$(grep -c '^wrote' writer.out)" -ge 12 ] && break
	kill -0 $writer 2>/dev/null || fail "qemu-io stopped early: $(tail -3 writer.out)"
	sleep 0.02
done
[ "$(grep -c '^wrote' writer.out)" -ge 12 ] || fail "qemu-io wrote too slowly through alpha: $(tail -3 writer.out)"
echo "\$ kill -9 <alpha's blkrepd>   # after $(grep -c '^wrote' writer.out) writes acknowledged"
t_kill=$(now_ms)
{ kill -9 "${pids[alpha]}"; wait "${pids[alpha]}"; } 2>/dev/null || true
unset 'pids[alpha]'

beta_primary() { [ "$(st beta "v['role']")" = Primary ]; }
waitfor 60 "beta Primary after alpha's death" beta_primary
t_primary=$(($(now_ms) - t_kill))
# The first write beta acknowledges (into the region it rewrites below).
beta_writes() { timeout 5 qemu-io -f raw "$beta_uri" -c "write -P 0xbb $((64 * MiB)) 4k" >/dev/null 2>&1; }
waitfor 60 "beta Primary and accepting writes" beta_writes
t_write=$(($(now_ms) - t_kill))
timeout 5 qemu-io -f raw "$beta_uri" -c "read -P 0xbb $((64 * MiB)) 4k" >/dev/null 2>&1 || fail "beta does not read back its first write"
wait $writer 2>/dev/null || true
acked=$(grep -c '^wrote' writer.out || true)
[ "$acked" -lt $nchunks ] || fail "the writer finished before alpha died: no write was in flight"
echo "qemu-io: $acked of $nchunks writes acknowledged, then: $(grep -v -m1 -E '^(wrote|[0-9.]+ KiB)' writer.out)"
echo
echo "beta Primary $(secs $t_primary) after the SIGKILL, accepting writes after $(secs $t_write)"
echo "(profile \"default\": gossip probes every 1 s with a 500 ms timeout, 3 s leases; docs/failover.md)"
grep -h -E 'connection to peer lost|Suspect alpha|member dead|election for term|promoted by automatic failover|term 2 with a majority|handler done' beta.log |
	sed -E 's/^time="[0-9-]+T([0-9:.]{12})[0-9]*Z" level=[a-z]+ msg=/  beta.log \1 /; s/ component=[a-z]+//; s/ node=beta//; s/ volume=r0//' || true

say "beta holds every byte alpha acknowledged"
cmp -n $((8 * MiB)) data1.bin beta-r0.img >/dev/null || fail "beta lost part of the first 8 MiB"
head -c $((8 * MiB)) data1.bin >acked.bin
head -c $((acked * chunk)) data2.bin >>acked.bin
run nbdcopy "$beta_uri" beta-now.img
cmp -n $((8 * MiB + acked * chunk)) acked.bin beta-now.img || fail "beta lacks a write alpha acknowledged"
echo "read back through beta's export: the 8 MiB and the $acked acknowledged writes ($((8 * MiB + acked * chunk)) bytes) are identical (cmp)"
rm -f beta-now.img chunk.*

say "Write 8 MiB through beta, the new Primary, while alpha is down"
head -c 8M /dev/urandom >data3.bin
run qemu-io -f raw "$beta_uri" -c "write -s data3.bin 64M 8M" -c flush
run br beta status | grep -E -A1 '^(r0|    peer) ' || true
oos=$(st beta "p['out_of_sync_bytes']")
echo "beta tracks $oos bytes out of sync with alpha"

say "Restart alpha: it comes back Secondary and resyncs only what changed"
t=$(now_ms)
echo "\$ blkrepd --config failover.toml --node alpha &"
start alpha
waitfor 30 "alpha Secondary and in sync with beta" in_sync beta alpha
echo "alpha Secondary and in sync $(secs $(($(now_ms) - t))) after its restart"
run br alpha status | sed -n '/^r0 /,/^    size /p' | sed '$d'
hot=$(grep -o 'hot_extents=[0-9]*' alpha.log | tail -1 | cut -d= -f2 || true)
moved=$(st alpha "p['resync']['done_bytes']")
rule=$(st alpha "p['handshake']['rule'], '->', p['handshake']['action']")
echo "alpha's restart found ${hot:-0} hot activity-log extents of 4 MiB: writes alpha may have made"
echo "  without beta when it died, now fetched back from beta (what beta has is what counts)"
echo "beta wrote 8 MiB at offset 64 MiB while alpha was down (its first 4 KiB probe write lies inside)"
echo "the resync moved $moved bytes ($((moved / MiB)) MiB of the $((size / MiB)) MiB volume; handshake: $rule)"
[ "$moved" = $((8 * MiB + hot * 4 * MiB)) ] && echo "  = the 8 MiB beta wrote + $hot x 4 MiB of alpha's hot extents"
[ -n "$hot" ] || fail "alpha's log does not report its crash recovery"
[ "$moved" -ge $((8 * MiB)) ] && [ "$moved" -le $((8 * MiB + hot * 4 * MiB)) ] ||
	fail "the resync moved $moved bytes, expected 8 MiB to $((8 + hot * 4)) MiB"
[ "$(st beta "p['resync']['done_bytes']")" = "$moved" ] || fail "beta and alpha disagree on the resync"
identical
[ "$(st beta "v['role']")" = Primary ] || fail "beta lost the primary role when alpha came back"

say "The after_promote handler ran on alpha at the start and on beta at the takeover"
run cat after-promote.log
grep -q 'node=alpha ' after-promote.log || fail "after_promote did not run on alpha"
grep -q 'node=beta ' after-promote.log || fail "after_promote did not run on beta"
echo
echo "blkrep events on beta, from the SIGKILL to now:"
grep -v -E '^\s*$' events-beta.txt | sed 's/^/  /' | head -30 || true

say "Planned switchover back to alpha: 'blkrep failover r0' on beta, the primary"
# The switchover refuses (changing nothing) until beta sees alpha alive in
# the gossip and in sync: alpha has just restarted.
t=$(now_ms)
until out=$(br beta failover r0 2>&1); do
	echo "$out" | grep -q -e 'in sync with beta' -e 'not connected and in sync' -e 'is not alive' ||
		fail "the switchover was refused: $out"
	[ $(($(now_ms) - t)) -lt 10000 ] || fail "the switchover was refused for 10 s: $out"
	sleep 0.2
done
echo "\$ blkrep --config failover.toml --node beta failover r0"
echo "$out"
alpha_primary() { [ "$(st alpha "v['role']")" = Primary ] && [ "$(st beta "v['role']")" = Secondary ]; }
waitfor 10 "alpha Primary and beta Secondary after the switchover" alpha_primary
timeout 10 qemu-io -f raw "$alpha_uri" -c "write -P 0xcc $((96 * MiB)) 1M" >/dev/null 2>&1 ||
	fail "alpha does not acknowledge writes after the switchover"
echo "alpha Primary again and acknowledging writes $(secs $(($(now_ms) - t))) after the command; beta Secondary"
[ "$(grep -c 'node=alpha ' after-promote.log)" = 2 ] || fail "after_promote did not run on alpha after the switchover"
waitfor 30 "beta in sync with alpha" in_sync alpha beta
identical

say "Stop all three"
stopall
echo "failover demo: OK ($(secs $(($(now_ms) - t_demo))))"
