#!/usr/bin/env bash
# blkrep resync and memory benchmark: pairs of blkrepd daemons on 127.0.0.1 (page-cached image
# files under BENCH_TMPDIR), each part with its own pair, stopped and deleted before the next.
# Prints Markdown tables (stdout; progress on stderr). See docs/benchmarks.md, "Resync and memory".
#
#   throughput  a volume of BENCH_RESYNC_SIZE, BENCH_RESYNC_DIRTY written through alpha while
#               connected (both nodes hold data), then per round: disconnect, write
#               BENCH_RESYNC_DIRTY of different data through alpha, reconnect, and read the
#               resync's bytes and duration (finished_at - started_at) from beta's status.
#               Twice: a volume with the default resync_checksums ("after-crash": no checksums
#               after a disconnection) and one with resync_checksums = "always" (every block is
#               checksummed on both sides and, as the data differs, sent as well).
#   sparse      a sparse volume of BENCH_SPARSE_SIZE (1 MiB written while connected first, so
#               both replicas have a data generation). Per round: disconnect, write
#               BENCH_SPARSE_PERCENT % of the size in scattered 1 MiB chunks through alpha (fio,
#               offsets logged), reconnect, resync time from status; then the baseline: copy the
#               same chunks from alpha's image into a fresh sparse file on the same filesystem
#               and fdatasync it ("copying that 1 %", timed in-process); ratio resync / copy.
#   checksum    resync_checksums = "always", BENCH_CSUM_SIZE written and in sync, then
#               `blkrep invalidate` on beta: a resync of every block, with checksums; the bytes
#               the source sends (sent_bytes of alpha's status) against the range.
#   memory      one node with a BENCH_MEM_SIZE sparse volume (internal metadata), then a pair:
#               VmRSS/VmHWM of each blkrepd after start, after scattered writes through NBD,
#               and (pair) after a disconnected write and its resync.
#
# Usage: scripts/bench-resync.sh     (normally via `make bench-resync` or `make bench`)
#
# Environment:
#   BENCH_RESYNC_PARTS="throughput sparse checksum memory"   parts to run, any subset
#   BENCH_RESYNC_ROUNDS=3       rounds of throughput, sparse and checksum (medians reported)
#   BENCH_RESYNC_SIZE=4GiB      throughput: volume size
#   BENCH_RESYNC_DIRTY=2GiB     throughput: bytes dirtied (written while disconnected) per round
#   BENCH_SPARSE_SIZE=16GiB     sparse: volume size
#   BENCH_SPARSE_PERCENT=1      sparse: percent of the volume written per round (1 MiB chunks)
#   BENCH_CSUM_SIZE=1GiB        checksum: volume size (all of it identical, then resynced)
#   BENCH_MEM_SIZE=1TiB         memory: volume size
#   BENCH_MEM_WRITES=256MiB     memory: scattered 1 MiB writes per write phase (plus 4096 4 KiB
#                               writes)
#   BENCH_STEP_TIMEOUT=300      seconds any one step (fio, a resync, a start-up) may take
#   BENCH_OUT=./bench-out       resync.md (tables, per-round figures, versions), resync-*.tsv
#   BENCH_BLKREPD=bin/blkrepd, BENCH_BLKREP=bin/blkrep
#   BENCH_TMPDIR=<repo>/.cache  parent of the work directory (must not be tmpfs); free space is
#                               checked per part, a part that does not fit is skipped
#   BENCH_KEEP=0                1: keep the work directory (configs, logs; images deleted anyway
#                               unless 1)
set -euo pipefail

prog=bench-resync.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$REPO/scripts/bench/report.py
RHELPER=$REPO/scripts/bench/resync.py

# shellcheck source=bench/lib.sh
. "$REPO/scripts/bench/lib.sh"
size_of() { # NAME VALUE: bytes, positive multiple of 1 MiB
	local b
	b=$(to_bytes "$2") || die "$1='$2' is not a size"
	((b > 0 && b % (1 << 20) == 0)) || die "$1 must be a positive multiple of 1 MiB (got $2)"
	echo "$b"
}

read -r -a PARTS <<<"${BENCH_RESYNC_PARTS:-throughput sparse checksum memory}"
ROUNDS=${BENCH_RESYNC_ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RESYNC_ROUNDS must be a positive integer"
RS_SIZE=$(size_of BENCH_RESYNC_SIZE "${BENCH_RESYNC_SIZE:-4GiB}")
RS_DIRTY=$(size_of BENCH_RESYNC_DIRTY "${BENCH_RESYNC_DIRTY:-2GiB}")
((RS_DIRTY <= RS_SIZE)) || die "BENCH_RESYNC_DIRTY is larger than BENCH_RESYNC_SIZE"
SP_SIZE=$(size_of BENCH_SPARSE_SIZE "${BENCH_SPARSE_SIZE:-16GiB}")
SP_PERCENT=${BENCH_SPARSE_PERCENT:-1}
[[ $SP_PERCENT =~ ^[1-9][0-9]?$ ]] || die "BENCH_SPARSE_PERCENT must be an integer from 1 to 99"
SP_CHUNKS=$(((SP_SIZE * SP_PERCENT / 100 + (1 << 20) - 1) >> 20)) # 1 MiB chunks, rounded up
CS_SIZE=$(size_of BENCH_CSUM_SIZE "${BENCH_CSUM_SIZE:-1GiB}")
MEM_SIZE=$(size_of BENCH_MEM_SIZE "${BENCH_MEM_SIZE:-1TiB}")
MEM_WRITES=$(size_of BENCH_MEM_WRITES "${BENCH_MEM_WRITES:-256MiB}")
STEP=${BENCH_STEP_TIMEOUT:-300}
[[ $STEP =~ ^[1-9][0-9]*$ ]] || die "BENCH_STEP_TIMEOUT must be a positive number of seconds"
OUT=${BENCH_OUT:-./bench-out}
BLKREPD=${BENCH_BLKREPD:-$REPO/bin/blkrepd}
BLKREP=${BENCH_BLKREP:-$REPO/bin/blkrep}
PYTHON=${PYTHON:-python3}
for p in "${PARTS[@]}"; do
	case $p in throughput | sparse | checksum | memory) ;; *) die "unknown part '$p' (known: throughput sparse checksum memory)" ;; esac
done
((${#PARTS[@]} > 0)) || die "BENCH_RESYNC_PARTS is empty"
[ -x "$BLKREPD" ] || die "$BLKREPD not found: build it (make bench-resync does)"
[ -x "$BLKREP" ] || die "$BLKREP not found: build it (make bench-resync does)"
for c in fio nbdinfo "$PYTHON" timeout cmp findmnt df; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run scripts/install-deps.sh bench"
done
fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*nbd' || die "this fio has no nbd engine (Debian's fio has; run scripts/install-deps.sh bench)"

# ---------------------------------------------------------------- work dir, cleanup
TMP_PARENT=${BENCH_TMPDIR:-$REPO/.cache}
mkdir -p "$TMP_PARENT"
fstype=$(findmnt -n -o FSTYPE -T "$TMP_PARENT" 2>/dev/null | head -n 1 || stat -f -c %T "$TMP_PARENT")
[ "$fstype" != tmpfs ] && [ "$fstype" != ramfs ] || die "$TMP_PARENT is on $fstype: the work files must live on the repository's disk"
W=$(mktemp -d "$TMP_PARENT/bench-resync.XXXXXX")
W=$(cd "$W" && pwd -P)
((${#W} + 40 < 108)) || die "work dir path too long for unix sockets: $W (set BENCH_TMPDIR)"

declare -A PID=() # "part/node" -> pid of a blkrepd this script started
FIO_PID=

cleanup() {
	local rc=$? k
	trap - EXIT INT TERM HUP
	[ -n "$FIO_PID" ] && { kill -TERM "$FIO_PID" 2>/dev/null || true; wait "$FIO_PID" 2>/dev/null || true; }
	for k in "${!PID[@]}"; do stop_pid "${PID[$k]}"; done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		log "work directory kept: $W"
	else
		rm -rf "$W"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)
rm -f "$OUT"/resync.md "$OUT"/resync-*.tsv

# ---------------------------------------------------------------- daemons
# Each part has a directory DIR = $W/PART with c.toml: nodes alpha and beta on 127.0.0.1 (two
# free ports), the volumes the part needs. Disks NODE-VOLUME.img, NBD sockets NODE-VOLUME.sock,
# control sockets NODE.ctl, logs NODE.log, all in DIR (paths are relative to the config).

# config_head DIR: the cluster and the two nodes.
config_head() {
	local d=$1 ports
	read -r -a ports <<<"$("$PYTHON" "$HELPER" free-ports 2)" || die "no free TCP ports on 127.0.0.1"
	((${#ports[@]} == 2)) || die "no free TCP ports on 127.0.0.1"
	mkdir -p "$d"
	cat >"$d/c.toml" <<-EOF
		[cluster]
		name = "bench"
		secret = "blkrep-bench-secret-$RANDOM$RANDOM$RANDOM"

		[[node]]
		name = "alpha"
		control_socket = "alpha.ctl"
		address = "127.0.0.1:${ports[0]}"

		[[node]]
		name = "beta"
		control_socket = "beta.ctl"
		address = "127.0.0.1:${ports[1]}"
	EOF
}

# config_volume DIR NAME SIZE NODES [EXTRA-KEY-LINES]: a volume with a replica on each of NODES
# ("alpha beta" or "alpha"); the defaults otherwise (protocol C, internal metadata).
config_volume() {
	local d=$1 name=$2 size=$3 nodes=$4 extra=${5:-} n
	{
		printf '\n[[volume]]\nname = "%s"\nsize = "%s"\nconnect_interval = "1s"\n' "$name" "$(human_size "$size")"
		[ -n "$extra" ] && printf '%s\n' "$extra"
		for n in $nodes; do
			printf '\n  [[volume.replica]]\n  node = "%s"\n  disk = "%s-%s.img"\n  create = true\n  nbd_socket = "%s-%s.sock"\n' \
				"$n" "$n" "$name" "$n" "$name"
		done
	} >>"$d/c.toml"
}

br() { # DIR NODE ARGS...: the control client, bounded in time
	local d=$1 n=$2
	shift 2
	timeout 30 "$BLKREP" --config "$d/c.toml" --node "$n" "$@"
}

# start_node DIR NODE: start blkrepd and wait (BENCH_STEP_TIMEOUT) until its control socket
# answers; sets START_SECS to the seconds it took. (Not in a subshell: it records the pid.)
start_node() {
	local d=$1 n=$2 key=${1##*/}/$2 t0 i
	t0=$(date +%s%N)
	"$BLKREPD" --config "$d/c.toml" --node "$n" --log-level info </dev/null >>"$d/$n.log" 2>&1 &
	PID[$key]=$!
	for ((i = 0; i < STEP * 10; i++)); do
		if ! kill -0 "${PID[$key]}" 2>/dev/null; then
			tail -n 20 "$d/$n.log" >&2 || true
			die "blkrepd $key exited at start (log above)"
		fi
		if "$BLKREP" --config "$d/c.toml" --node "$n" status >/dev/null 2>&1; then
			START_SECS=$(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.2f", ns / 1e9 }')
			return 0
		fi
		sleep 0.1
	done
	die "blkrepd $key did not answer on its control socket within $STEP s"
}

stop_part() { # DIR: stop the part's daemons; delete its images unless BENCH_KEEP=1
	local d=$1 k
	for k in "${!PID[@]}"; do
		[[ $k == "${d##*/}/"* ]] || continue
		stop_pid "${PID[$k]}"
		unset 'PID[$k]'
	done
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -f "$d"/*.img
}

# peer DIR NODE VOLUME: the first peer's state from NODE's status (see report.py peer).
peer() {
	local f=$1/status-$2.json
	timeout 30 "$BLKREP" --config "$1/c.toml" --node "$2" status --json >"$f" 2>>"$1/status.log" &&
		"$PYTHON" "$HELPER" peer "$f" "$3" 2>>"$1/status.log"
}

# get_peer DIR NODE VOLUME: the same into the array P; dies if the status cannot be read.
get_peer() {
	local line
	line=$(peer "$@") || die "cannot read the status of $2 in ${1##*/} (see $1/status.log)"
	read -r -a P <<<"$line"
}

# Fields of a peer line (report.py peer) used here.
F_SENT=7 F_RULE=9 F_RS_CSUM=12 F_RS_TOTAL=13 F_RS_DONE=14 F_RS_SKIPPED=15 F_RS_SECS=16

wait_in_sync() { # DIR VOLUME: both sides Connected, Established, nothing out of sync or unacked
	"$PYTHON" "$RHELPER" wait --blkrep "$BLKREP" --config "$1/c.toml" --volume "$2" --timeout "$STEP" >/dev/null ||
		die "volume $2 in ${1##*/}: alpha and beta not connected and in sync within $STEP s"
}

# wait_resync DIR VOLUME SINCE: wait until beta reports a finished resync that started at or
# after SINCE (Unix seconds) and both sides are in sync (polled every 20 ms); sets RS to beta's
# peer line (array, F_* fields) and WALL to the seconds from SINCE until that was seen.
wait_resync() {
	local line
	line=$("$PYTHON" "$RHELPER" wait --blkrep "$BLKREP" --config "$1/c.toml" --volume "$2" \
		--timeout "$STEP" --since "$3") || die "volume $2 in ${1##*/}: no finished resync within $STEP s"
	read -r -a RS <<<"$line"
	WALL=${RS[18]}
}

# fio_write URI JSON ARGS...: one fio job writing through NBD, bounded in time; the data is
# fresh pseudo-random bytes for every request (--refill_buffers), never zero.
fio_write() {
	local uri=$1 json=$2 rc=0
	shift 2
	timeout --kill-after=10 "$STEP" fio --name=w --ioengine=nbd --uri="$uri" --refill_buffers \
		--output-format=json --output="$json" "$@" </dev/null >"$json.log" 2>&1 &
	FIO_PID=$!
	wait "$FIO_PID" || rc=$?
	FIO_PID=
	if [ "$rc" != 0 ]; then
		tail -n 5 "$json.log" >&2 || true
		die "fio failed (exit $rc) writing to $uri"
	fi
}

uri() { echo "nbd+unix:///$3?socket=$1/$2-$3.sock"; } # DIR NODE VOLUME

avail_bytes() { # free bytes on the work directory's filesystem
	local a
	a=$(df -B1 --output=avail "$W" 2>/dev/null | tail -n 1 | tr -d ' ')
	[[ $a =~ ^[0-9]+$ ]] || die "cannot read the free space of $W with df"
	echo "$a"
}

# room NEEDED-BYTES PART: is there that much free space under the work directory?
room() {
	local avail
	avail=$(avail_bytes)
	if ((avail < $1)); then
		log "SKIPPED part $2: it needs about $(($1 >> 20)) MiB free under $W, only $((avail >> 20)) MiB are"
		echo "| $2 | skipped: needs about $(($1 >> 20)) MiB free in $TMP_PARENT, $((avail >> 20)) MiB available |" >>"$OUT/resync-skipped.tsv"
		return 1
	fi
}

now() { date +%s.%N; }

# ---------------------------------------------------------------- parts
# sent_bytes of both nodes for VOLUME into SENT_A and SENT_B.
sent() {
	get_peer "$1" alpha "$2"
	SENT_A=${P[F_SENT]}
	get_peer "$1" beta "$2"
	SENT_B=${P[F_SENT]}
}

part_throughput() {
	local d=$W/throughput vol r since a0 b0
	room $((4 * RS_DIRTY + (1 << 30))) throughput || return 0
	config_head "$d"
	config_volume "$d" plain "$RS_SIZE" "alpha beta"
	config_volume "$d" csum "$RS_SIZE" "alpha beta" 'resync_checksums = "always"'
	start_node "$d" alpha
	start_node "$d" beta
	printf 'volume\tround\tdirty\ttotal\tdone\tskipped\tseconds\twall\tsrc_sent\ttgt_sent\tchecksum\trule\n' >"$OUT/resync-throughput.tsv"
	for vol in plain csum; do
		wait_in_sync "$d" "$vol"
		br "$d" alpha primary "$vol" >/dev/null
		log "throughput/$vol: writing $((RS_DIRTY >> 20)) MiB through alpha while connected (both nodes get it)"
		fio_write "$(uri "$d" alpha "$vol")" "$d/fill-$vol.json" --rw=write --bs=1M --iodepth=8 --size="$RS_DIRTY" --end_fsync=1
		wait_in_sync "$d" "$vol"
		for ((r = 1; r <= ROUNDS; r++)); do
			br "$d" alpha disconnect "$vol" >/dev/null
			fio_write "$(uri "$d" alpha "$vol")" "$d/dirty-$vol-$r.json" --rw=write --bs=1M --iodepth=8 \
				--size="$RS_DIRTY" --randseed=$((1000 + r)) --end_fsync=1
			sync
			sent "$d" "$vol"
			a0=$SENT_A b0=$SENT_B
			since=$(now)
			br "$d" alpha connect "$vol" >/dev/null
			wait_resync "$d" "$vol" "$since"
			sent "$d" "$vol"
			timeout "$STEP" cmp -n "$RS_SIZE" "$d/alpha-$vol.img" "$d/beta-$vol.img" >/dev/null ||
				die "throughput/$vol round $r: alpha's and beta's images differ after the resync"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$vol" "$r" "$RS_DIRTY" "${RS[F_RS_TOTAL]}" \
				"${RS[F_RS_DONE]}" "${RS[F_RS_SKIPPED]}" "${RS[F_RS_SECS]}" "$WALL" "$((SENT_A - a0))" \
				"$((SENT_B - b0))" "${RS[F_RS_CSUM]}" "${RS[F_RULE]}" >>"$OUT/resync-throughput.tsv"
			log "throughput/$vol round $r: ${RS[F_RS_DONE]} bytes in ${RS[F_RS_SECS]} s (checksums ${RS[F_RS_CSUM]}, rule ${RS[F_RULE]}), in sync ${WALL} s after connect; images identical"
		done
	done
	stop_part "$d"
}

part_sparse() {
	local d=$W/sparse r since a0 c
	room $((3 * ROUNDS * SP_CHUNKS * (1 << 20) + (1 << 30))) sparse || return 0
	config_head "$d"
	config_volume "$d" sparse "$SP_SIZE" "alpha beta"
	start_node "$d" alpha
	start_node "$d" beta
	wait_in_sync "$d" sparse
	br "$d" alpha primary sparse >/dev/null
	# A first write while connected gives both replicas a data generation. Without it the
	# first disconnected write would leave beta "just created" and the reconnection would be a
	# FULL resync (rule local-just-created), not a bitmap one: not what this part measures.
	fio_write "$(uri "$d" alpha sparse)" "$d/first.json" --rw=write --bs=1M --size=1M --end_fsync=1
	wait_in_sync "$d" sparse
	printf 'round\tchunks\tbytes\tcopy_seconds\tresync_seconds\tresync_wall\ttotal\tdone\tsrc_sent\trule\n' >"$OUT/resync-sparse.tsv"
	log "sparse: $SP_CHUNKS scattered 1 MiB chunks ($SP_PERCENT % of $(human_size "$SP_SIZE")) per round"
	for ((r = 1; r <= ROUNDS; r++)); do
		br "$d" alpha disconnect sparse >/dev/null
		fio_write "$(uri "$d" alpha sparse)" "$d/dirty-$r.json" --rw=randwrite --bs=1M --iodepth=8 \
			--size="$SP_SIZE" --io_size=$((SP_CHUNKS << 20)) --randseed=$((2000 + r)) --end_fsync=1 \
			--write_iolog="$d/iolog-$r.txt"
		sync
		sent "$d" sparse
		a0=$SENT_A
		since=$(now)
		br "$d" alpha connect sparse >/dev/null
		wait_resync "$d" sparse "$since"
		sent "$d" sparse
		# The baseline: copy the same chunks from alpha's image into a fresh sparse file on the
		# same filesystem, then fdatasync (the resync ends with a flush of beta's data too).
		sync
		truncate -s "$SP_SIZE" "$d/copy.img"
		c=$(timeout "$STEP" "$PYTHON" "$RHELPER" copy "$d/alpha-sparse.img" "$d/copy.img" "$d/iolog-$r.txt") ||
			die "sparse round $r: the copy baseline failed"
		rm -f "$d/copy.img"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$SP_CHUNKS" "${c#* }" "${c% *}" \
			"${RS[F_RS_SECS]}" "$WALL" "${RS[F_RS_TOTAL]}" "${RS[F_RS_DONE]}" "$((SENT_A - a0))" "${RS[F_RULE]}" >>"$OUT/resync-sparse.tsv"
		log "sparse round $r: resync of ${RS[F_RS_DONE]} bytes ${RS[F_RS_SECS]} s (in sync ${WALL} s after connect); copy of ${c#* } bytes ${c% *} s"
	done
	stop_part "$d"
}

part_checksum() {
	local d=$W/checksum r since a0 b0
	room $((2 * CS_SIZE + (1 << 30))) checksum || return 0
	config_head "$d"
	config_volume "$d" csum "$CS_SIZE" "alpha beta" 'resync_checksums = "always"'
	start_node "$d" alpha
	start_node "$d" beta
	wait_in_sync "$d" csum
	br "$d" alpha primary csum >/dev/null
	log "checksum: writing $((CS_SIZE >> 20)) MiB through alpha while connected"
	fio_write "$(uri "$d" alpha csum)" "$d/fill.json" --rw=write --bs=1M --iodepth=8 --size="$CS_SIZE" --end_fsync=1
	wait_in_sync "$d" csum
	timeout "$STEP" cmp -n "$CS_SIZE" "$d/alpha-csum.img" "$d/beta-csum.img" >/dev/null ||
		die "checksum: alpha's and beta's images differ before the test"
	printf 'round\tsize\ttotal\tdone\tskipped\tseconds\twall\tsrc_sent\ttgt_sent\tchecksum\trule\n' >"$OUT/resync-checksum.tsv"
	for ((r = 1; r <= ROUNDS; r++)); do
		sync
		sent "$d" csum
		a0=$SENT_A b0=$SENT_B
		since=$(now)
		br "$d" beta invalidate csum >/dev/null
		wait_resync "$d" csum "$since"
		sent "$d" csum
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$CS_SIZE" "${RS[F_RS_TOTAL]}" "${RS[F_RS_DONE]}" \
			"${RS[F_RS_SKIPPED]}" "${RS[F_RS_SECS]}" "$WALL" "$((SENT_A - a0))" "$((SENT_B - b0))" "${RS[F_RS_CSUM]}" \
			"${RS[F_RULE]}" >>"$OUT/resync-checksum.tsv"
		log "checksum round $r: ${RS[F_RS_DONE]} bytes resynced (${RS[F_RS_SKIPPED]} identical) in ${RS[F_RS_SECS]} s; alpha sent $((SENT_A - a0)) bytes, beta $((SENT_B - b0)) (rule ${RS[F_RULE]}, checksums ${RS[F_RS_CSUM]})"
	done
	timeout "$STEP" cmp -n "$CS_SIZE" "$d/alpha-csum.img" "$d/beta-csum.img" >/dev/null ||
		die "checksum: alpha's and beta's images differ after the resyncs"
	stop_part "$d"
}

rss() { # PID: "VmRSS VmHWM" in KiB
	awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {print r + 0, h + 0}' "/proc/$1/status"
}

# mem_sample SETUP NODE PHASE DIR: one row of resync-memory.tsv.
mem_sample() {
	local key=${4##*/}/$2 m
	m=$(rss "${PID[$key]}")
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${m% *}" "${m#* }" >>"$OUT/resync-memory.tsv"
	log "memory/$1 $2 $3: VmRSS ${m% *} KiB, VmHWM ${m#* } KiB"
}

# mem_writes URI JSON-PREFIX SEED: scattered writes over the whole volume: BENCH_MEM_WRITES in
# 1 MiB chunks, then 4096 writes of 4 KiB.
mem_writes() {
	fio_write "$1" "$2-1m.json" --rw=randwrite --bs=1M --iodepth=8 --size="$MEM_SIZE" \
		--io_size="$MEM_WRITES" --randseed="$3" --end_fsync=1
	fio_write "$1" "$2-4k.json" --rw=randwrite --bs=4k --iodepth=32 --size="$MEM_SIZE" \
		--number_ios=4096 --norandommap --randseed="$3" --end_fsync=1
}

part_memory() {
	local d area need since
	# Internal metadata for MEM_SIZE: what the daemon adds at the end of each image (and writes:
	# the bitmaps are created all clear, so the area is allocated).
	area=$("$PYTHON" "$RHELPER" meta-area "$MEM_SIZE")
	need=$((3 * (area + 2 * MEM_WRITES + (16 << 20)) + (1 << 30)))
	room "$need" memory || return 0
	if ! truncate -s $((MEM_SIZE + area)) "$W/probe.img" 2>/dev/null; then
		rm -f "$W/probe.img"
		log "SKIPPED part memory: the filesystem of $W cannot hold a sparse file of $((MEM_SIZE + area)) bytes"
		echo "| memory | skipped: $fstype cannot hold a sparse file of $((MEM_SIZE + area)) bytes |" >>"$OUT/resync-skipped.tsv"
		return 0
	fi
	rm -f "$W/probe.img"
	printf 'setup\tnode\tphase\tvmrss_kib\tvmhwm_kib\n' >"$OUT/resync-memory.tsv"
	log "memory: a $(human_size "$MEM_SIZE") sparse volume; internal metadata $((area >> 20)) MiB at the end of each image"

	# One node, one replica.
	d=$W/memsolo
	config_head "$d"
	config_volume "$d" big "$MEM_SIZE" "alpha"
	start_node "$d" alpha
	log "memory/standalone: alpha answers $START_SECS s after start (metadata created)"
	printf 'standalone\talpha\tstart_seconds\t%s\n' "$START_SECS" >"$OUT/resync-memory-extra.tsv"
	timeout 30 "$BLKREP" --config "$d/c.toml" --node alpha status --json >"$d/status-alpha.json"
	printf 'standalone\talpha\tarea_bytes\t%s\n' "$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["volumes"][0]["metadata"]["area_bytes"])' "$d/status-alpha.json")" >>"$OUT/resync-memory-extra.tsv"
	br "$d" alpha primary big >/dev/null 2>&1 || true
	mem_sample standalone alpha "after start" "$d"
	mem_writes "$(uri "$d" alpha big)" "$d/w" 3001
	mem_sample standalone alpha "after writes" "$d"
	stop_part "$d"

	# A pair (protocol C).
	d=$W/mempair
	config_head "$d"
	config_volume "$d" big "$MEM_SIZE" "alpha beta"
	start_node "$d" alpha
	printf 'pair\talpha\tstart_seconds\t%s\n' "$START_SECS" >>"$OUT/resync-memory-extra.tsv"
	start_node "$d" beta
	wait_in_sync "$d" big
	br "$d" alpha primary big >/dev/null
	mem_sample pair alpha "after start" "$d"
	mem_sample pair beta "after start" "$d"
	mem_writes "$(uri "$d" alpha big)" "$d/w" 3002
	wait_in_sync "$d" big
	mem_sample pair alpha "after writes" "$d"
	mem_sample pair beta "after writes" "$d"
	br "$d" alpha disconnect big >/dev/null
	mem_writes "$(uri "$d" alpha big)" "$d/x" 3003
	since=$(now)
	br "$d" alpha connect big >/dev/null
	wait_resync "$d" big "$since"
	log "memory/pair: resync of ${RS[F_RS_DONE]} scattered bytes over $(human_size "$MEM_SIZE") in ${RS[F_RS_SECS]} s"
	printf 'pair\tbeta\tresync_bytes\t%s\npair\tbeta\tresync_seconds\t%s\n' "${RS[F_RS_DONE]}" "${RS[F_RS_SECS]}" >>"$OUT/resync-memory-extra.tsv"
	mem_sample pair alpha "after resync" "$d"
	mem_sample pair beta "after resync" "$d"
	stop_part "$d"
}

# ---------------------------------------------------------------- run
log "work dir $W ($fstype, $(($(avail_bytes) >> 30)) GiB free); parts: ${PARTS[*]}; $ROUNDS rounds"
t_start=$(date +%s)
for p in "${PARTS[@]}"; do
	t_part=$(date +%s)
	"part_$p"
	log "part $p done in $(($(date +%s) - t_part)) s"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
dirty=
[ -n "$(git -C "$REPO" status --porcelain -- '*.go' go.mod go.sum 2>/dev/null)" ] && dirty=+dirty
ver="blkrepd: $("$BLKREPD" --version 2>/dev/null | head -n1 || true) (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$dirty); fio: $(fio --version)"
note="$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $mem, Linux $(uname -r), images page-cached on $fstype, pairs on 127.0.0.1 TCP; $ROUNDS rounds, figures are medians over the rounds; $ver"
tables=$("$PYTHON" "$RHELPER" tables "$OUT" \
	--resync-size "$RS_SIZE" --sparse-size "$SP_SIZE" --sparse-percent "$SP_PERCENT" --mem-size "$MEM_SIZE")
details=$("$PYTHON" "$RHELPER" tables "$OUT" --detail \
	--resync-size "$RS_SIZE" --sparse-size "$SP_SIZE" --sparse-percent "$SP_PERCENT" --mem-size "$MEM_SIZE")
{
	echo "# blkrep resync and memory benchmark"
	echo
	echo "$note"
	echo
	echo "$details"
	echo
	echo "Figures per round: resync-*.tsv (throughput, sparse, checksum, memory)"
} >"$OUT/resync.md"
echo "$note"
echo
echo "$tables"
log "results: $OUT/resync.md (all in $(($(date +%s) - t_start)) s)"
