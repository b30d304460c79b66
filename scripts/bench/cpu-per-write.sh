#!/usr/bin/env bash
# cpu-per-write.sh: where a replicated write's cost goes. Runs one fio workload against
# standalone blkrepd and then against an alpha/beta pair (protocol PROTO), both on a tmpfs
# work directory, and prints for each: the rate, the CPU time alpha, beta and fio used per
# request (utime+stime, microseconds) and the machine's context switches per request.
# Not a benchmark of record (make bench is): a tool to see which side of a pair a change
# makes cheaper, and where the time goes.
#
# usage: scripts/bench/cpu-per-write.sh [PROTO] [RW] [BS] [QD]    (default: C randwrite 4k 32)
# env:   CPW_SIZE=1GiB export size; CPW_RUNTIME=10 seconds measured per run;
#        CPW_DIR=/dev/shm/blkrep-cpw work directory (removed afterwards);
#        CPW_BIN=<repo>/bin (blkrepd, blkrep); CPW_PPROF=1: also take 5 s CPU profiles of
#        each daemon during each run and keep them as ./cpw-<server>-<node>.prof
set -euo pipefail
prog=cpu-per-write.sh
REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$REPO/scripts/bench/lib.sh"
PROTO=${1:-C} RW=${2:-randwrite} BS=${3:-4k} QD=${4:-32}
[[ $PROTO =~ ^[ABC]$ ]] || die "PROTO must be A, B or C (got '$PROTO')"
[[ $QD =~ ^[1-9][0-9]*$ ]] || die "QD must be a positive number (got '$QD')"
SIZE=${CPW_SIZE:-1GiB} RUNTIME=${CPW_RUNTIME:-10}
DIR=${CPW_DIR:-/dev/shm/blkrep-cpw} BIN=${CPW_BIN:-$REPO/bin}
for t in fio python3 curl; do command -v "$t" >/dev/null || die "$t not found (apt-get install fio curl)"; done
for t in blkrepd blkrep; do [ -x "$BIN/$t" ] || die "$BIN/$t not found (make build)"; done
[ -e "$DIR" ] && die "$DIR exists: remove it or set CPW_DIR"
PIDS=()
stop_all() {
	local p
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	PIDS=()
	rm -rf "$DIR"
}
trap stop_all EXIT

cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a process, in ticks
ctxt() { awk '/^ctxt/ {print $2}' /proc/stat; }
wait_sock() {
	local i
	for ((i = 0; i < 100; i++)); do [ -S "$1" ] && return 0; sleep 0.1; done
	die "no socket $1 after 10 s"
}

# run NAME: fill the export, then the measured fio run against $DIR/a.sock; one line.
run() {
	local name=$1 a=${PIDS[0]} b=${PIDS[1]:-} c0 a0 b0=0 c1 a1 b1=0 f0 f1 uri="nbd+unix:///v?socket=$DIR/a.sock"
	fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$SIZE" \
		>"$DIR/fill.out" 2>&1 || die "$name: fill failed: $(tail -3 "$DIR/fill.out")"
	sleep 1
	local profs=()
	if [ "${CPW_PPROF:-0}" = 1 ]; then
		(sleep 2; curl -sf -o "cpw-$name-alpha.prof" "http://127.0.0.1:26061/debug/pprof/profile?seconds=5") &
		profs+=($!)
		if [ -n "$b" ]; then
			(sleep 2; curl -sf -o "cpw-$name-beta.prof" "http://127.0.0.1:26062/debug/pprof/profile?seconds=5") &
			profs+=($!)
		fi
	fi
	c0=$(ctxt) a0=$(cputicks "$a") f0=$(awk '{print $16 + $17}' /proc/$$/stat)
	[ -n "$b" ] && b0=$(cputicks "$b")
	fio --name=x --ioengine=nbd --uri="$uri" --rw="$RW" --bs="$BS" --iodepth="$QD" --size="$SIZE" \
		--time_based --runtime="$RUNTIME" --output-format=json >"$DIR/fio.json" 2>"$DIR/fio.err" ||
		die "$name: fio failed: $(tail -3 "$DIR/fio.err")"
	c1=$(ctxt) a1=$(cputicks "$a") f1=$(awk '{print $16 + $17}' /proc/$$/stat) # children: fio
	[ -n "$b" ] && b1=$(cputicks "$b")
	local p
	for p in "${profs[@]}"; do wait "$p" || true; done
	python3 - "$name" "$DIR/fio.json" $((a1 - a0)) $((b1 - b0)) $((f1 - f0)) $((c1 - c0)) "$(getconf CLK_TCK)" <<-'PY'
		import json, sys
		name, fj, da, db, df, dc, tick = sys.argv[1:]
		s = open(fj).read()
		j = json.loads(s[s.index('{'):])['jobs'][0]
		w = j['write'] if j['write']['total_ios'] else j['read']
		ios = w['total_ios']
		us = lambda t: float(t) / float(tick) * 1e6 / ios
		print(f"{name:<12} {w['iops']:>9.0f} {w['bw'] / 1024:>8.0f} {us(da):>9.1f} {us(db):>9.1f} {us(df):>8.1f} {int(dc) / ios:>6.2f}")
	PY
}

echo "workload: fio $RW bs=$BS iodepth=$QD, ${RUNTIME}s after a fill, export $SIZE, in $DIR"
printf '%-12s %9s %8s %9s %9s %8s %6s\n' server IOPS MiB/s "alpha us" "beta us" "fio us" "cs/io"
pa=() pb=()
if [ "${CPW_PPROF:-0}" = 1 ]; then pa=(--pprof 127.0.0.1:26061) pb=(--pprof 127.0.0.1:26062); fi

mkdir -p "$DIR"
cat >"$DIR/s.toml" <<TOML
[cluster]
name = "cpw"

[[node]]
name = "alpha"
control_socket = "a.ctl"

[[volume]]
name = "v"
size = "$SIZE"

[[volume.replica]]
node = "alpha"
disk = "a.img"
create = true
nbd_socket = "a.sock"
TOML
"$BIN/blkrepd" --config "$DIR/s.toml" --node alpha --log-level warn "${pa[@]}" >"$DIR/a.log" 2>&1 &
PIDS+=($!)
wait_sock "$DIR/a.sock"
run standalone
stop_all

mkdir -p "$DIR"
cat >"$DIR/p.toml" <<TOML
[cluster]
name = "cpw"
secret = "cpu-per-write-$RANDOM$RANDOM$RANDOM"

[[node]]
name = "alpha"
control_socket = "a.ctl"
address = "127.0.0.1:26071"

[[node]]
name = "beta"
control_socket = "b.ctl"
address = "127.0.0.1:26072"

[[volume]]
name = "v"
size = "$SIZE"
protocol = "$PROTO"
connect_interval = "1s"

[[volume.replica]]
node = "alpha"
disk = "a.img"
create = true
nbd_socket = "a.sock"

[[volume.replica]]
node = "beta"
disk = "b.img"
create = true
nbd_socket = "b.sock"
TOML
"$BIN/blkrepd" --config "$DIR/p.toml" --node alpha --log-level warn "${pa[@]}" >"$DIR/a.log" 2>&1 &
PIDS+=($!)
"$BIN/blkrepd" --config "$DIR/p.toml" --node beta --log-level warn "${pb[@]}" >"$DIR/b.log" 2>&1 &
PIDS+=($!)
for ((i = 0; ; i++)); do
	"$BIN/blkrep" --config "$DIR/p.toml" --node alpha primary v >"$DIR/primary.out" 2>&1 && break
	((i < 100)) || die "alpha did not become Primary: $(cat "$DIR/primary.out")"
	sleep 0.2
done
wait_sock "$DIR/a.sock"
run "pair-$PROTO"
