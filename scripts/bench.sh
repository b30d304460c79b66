#!/usr/bin/env bash
# blkrep benchmark: fio's nbd engine against blkrepd and three reference NBD servers
# (nbdkit file, qemu-nbd, nbd-server), all exporting identical files over unix sockets,
# measured in one run, alternating the servers, several rounds. See docs/benchmarks.md.
# (Resync speed and memory have their own script, scripts/bench-resync.sh.)
#
# blkrepd runs in three standalone variants, each its own daemon with its own config, control
# socket, image and NBD socket in the work directory:
#   blkrepd       the defaults: internal metadata, al_extents = 1237 (4.8 GiB, so a working
#                 set of BENCH_SIZE up to 4.8 GiB stays inside the activity log)
#   blkrepd-nomd  meta_disk = "none": no metadata, no activity log (the baseline of the
#                 activity-log cost)
#   blkrepd-al4x  internal metadata, al_extents = BENCH_SIZE / 4 / 4 MiB (at least 1): the
#                 working set is four times the activity log
# and three replicated ones, each a PAIR of daemons on 127.0.0.1 (free ports picked at start):
#   blkrepd-A, blkrepd-B, blkrepd-C   alpha (Primary, serves the NBD socket fio uses) replicates
#                 to beta (Secondary) under protocol A, B or C; otherwise the settings of
#                 blkrepd (internal metadata, al_extents 1237, image SIZE + metadata on each
#                 node). Both images are created fresh, so the first handshake is
#                 "both-just-created": no initial sync; the fill below goes through alpha and
#                 is replicated, so beta's image ends up identical and fully allocated too.
# For each blkrepd* run the control status is read before and after fio, and the activity-log
# records and NBD writes of the run go to al.tsv; a second table ("activity log cost") shows,
# per write workload, blkrepd and blkrepd-al4x against blkrepd-nomd and AL writes per 1000 writes.
# After each run on a pair the script waits until beta has acknowledged everything, and marks
# the run failed if the pair was not Connected and in sync all along (a reconnect, or bytes out
# of sync: the figure would not be a replicated one). A third table ("replication cost") shows,
# per write workload, blkrepd-A/B/C against blkrepd and their added mean write latency.
#
# Usage: scripts/bench.sh            (normally via `make bench`, which builds bin/blkrepd)
#
# Environment:
#   BENCH_SIZE=1GiB        export size for every server (K/M/G/KiB/MiB/GiB or bytes; multiple of 4096)
#   BENCH_ROUNDS=3         rounds; each round runs every workload on every server once
#   BENCH_RUNTIME=10       seconds measured per fio run
#   BENCH_RAMP=1           seconds of fio ramp-up (not measured) per run
#   BENCH_OUT=./bench-out  where results.md, results.tsv, al.tsv and raw fio JSON (raw/) go
#   BENCH_SERVERS="blkrepd blkrepd-nomd blkrepd-al4x blkrepd-A blkrepd-B blkrepd-C nbdkit qemu-nbd nbd-server"
#                          servers to run (any subset)
#   BENCH_WORKLOADS="randwrite-4k-qd1 randwrite-4k-qd32 seqwrite-1m-qd8 randread-4k-qd32 writeflush-4k-qd1"
#   BENCH_BASE=blkrepd     server whose ratio to each peer is reported
#   BENCH_BLKREPD=bin/blkrepd
#   BENCH_BLKREP=bin/blkrep   control client, reads each blkrepd*'s status (AL counters)
#   BENCH_QEMU_AIO=threads qemu-nbd --aio mode (threads is qemu-nbd's default)
#   BENCH_SYNC=1           `sync` before every fio run so one server's dirty pages are not
#                          written back during the next server's run
#   BENCH_TMPDIR=<repo>/.cache   parent of the work directory (not tmpfs unless BENCH_TMPFS=1)
#   BENCH_TMPFS=0          1: allow BENCH_TMPDIR on tmpfs (e.g. /dev/shm): measures what
#                          replication itself costs, without the disk flushes the Secondary
#                          makes at every epoch (standalone never flushes unless asked)
#   BENCH_KEEP=0           1: keep the work directory (images, configs, server logs)
#
# The Markdown tables go to stdout, progress to stderr.
set -euo pipefail

prog=bench.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$REPO/scripts/bench/report.py

# shellcheck source=bench/lib.sh
. "$REPO/scripts/bench/lib.sh"

SIZE=$(to_bytes "${BENCH_SIZE:-1GiB}") || die "BENCH_SIZE='${BENCH_SIZE}' is not a size"
((SIZE > 0 && SIZE % 4096 == 0)) || die "BENCH_SIZE must be a positive multiple of 4096 (got $SIZE)"
ROUNDS=${BENCH_ROUNDS:-3}
RUNTIME=${BENCH_RUNTIME:-10}
RUNTIME=${RUNTIME%s}
RAMP=${BENCH_RAMP:-1}
RAMP=${RAMP%s}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNTIME must be a positive number of seconds"
[[ $RAMP =~ ^[0-9]+$ ]] || die "BENCH_RAMP must be a number of seconds"
OUT=${BENCH_OUT:-./bench-out}
ALL_SERVERS="blkrepd blkrepd-nomd blkrepd-al4x blkrepd-A blkrepd-B blkrepd-C nbdkit qemu-nbd nbd-server"
read -r -a SERVERS <<<"${BENCH_SERVERS:-$ALL_SERVERS}"
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-randwrite-4k-qd1 randwrite-4k-qd32 seqwrite-1m-qd8 randread-4k-qd32 writeflush-4k-qd1}"
BASE=${BENCH_BASE:-blkrepd}
BLKREPD=${BENCH_BLKREPD:-$REPO/bin/blkrepd}
BLKREP=${BENCH_BLKREP:-$REPO/bin/blkrep}
QEMU_AIO=${BENCH_QEMU_AIO:-threads}
DO_SYNC=${BENCH_SYNC:-1}
PYTHON=${PYTHON:-python3}
((${#SERVERS[@]} > 0)) || die "BENCH_SERVERS is empty"
# blkrepd-al4x: an activity log of a quarter of the working set (4 MiB extents).
AL4X_EXTENTS=$((SIZE / 4 / (4 << 20)))
((AL4X_EXTENTS >= 1)) || AL4X_EXTENTS=1
((AL4X_EXTENTS <= 65536)) || die "BENCH_SIZE too large for blkrepd-al4x (al_extents $AL4X_EXTENTS > 65536)"

# fio arguments of each workload (the figure each produces is defined in bench/report.py).
declare -A WL_UNIT=(
	[randwrite-4k-qd1]=IOPS [randwrite-4k-qd32]=IOPS [seqwrite-1m-qd8]=GiB/s
	[randread-4k-qd32]=IOPS [writeflush-4k-qd1]=pairs/s
)
declare -A WL_ARGS=(
	[randwrite-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1"
	[randwrite-4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
	[seqwrite-1m-qd8]="--rw=write --bs=1M --iodepth=8"
	[randread-4k-qd32]="--rw=randread --bs=4k --iodepth=32"
	[writeflush-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
)
for wl in "${WORKLOADS[@]}"; do
	[ -n "${WL_ARGS[$wl]:-}" ] || die "unknown workload '$wl' (known: ${!WL_ARGS[*]})"
done

need=(fio nbdinfo nbdcopy "$PYTHON" timeout)
for s in "${SERVERS[@]}"; do
	case $s in
	blkrepd | blkrepd-nomd | blkrepd-al4x | blkrepd-[ABC])
		[ -x "$BLKREPD" ] || die "$BLKREPD not found: build it (make bench does) or leave $s out of BENCH_SERVERS"
		[ -x "$BLKREP" ] || die "$BLKREP not found: build it (make bench does) or leave $s out of BENCH_SERVERS"
		;;
	nbdkit) need+=(nbdkit) ;;
	qemu-nbd) need+=(qemu-nbd) ;;
	nbd-server) need+=(nbd-server) ;;
	*) die "unknown server '$s' (known: $ALL_SERVERS)" ;;
	esac
done
for c in "${need[@]}"; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run scripts/install-deps.sh bench"
done
fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*nbd' || die "this fio has no nbd engine (Debian's fio has; run scripts/install-deps.sh bench)"

# ---------------------------------------------------------------- work dir, cleanup
TMP_PARENT=${BENCH_TMPDIR:-$REPO/.cache}
mkdir -p "$TMP_PARENT"
fstype=$(findmnt -n -o FSTYPE -T "$TMP_PARENT" 2>/dev/null | head -n 1 || stat -f -c %T "$TMP_PARENT")
if [ "$fstype" = tmpfs ] || [ "$fstype" = ramfs ]; then
	[ "${BENCH_TMPFS:-0}" = 1 ] || die "$TMP_PARENT is on $fstype: the work files must live on the repository's disk (BENCH_TMPFS=1 allows it, for the replication comparison)"
fi
W=$(mktemp -d "$TMP_PARENT/bench.XXXXXX")
W=$(cd "$W" && pwd -P)
((${#W} + 20 < 108)) || die "work dir path too long for unix sockets: $W (set BENCH_TMPDIR)"

declare -A PID=() URI=() IMG=()
FIO_PID=

cleanup() {
	local rc=$? s
	trap - EXIT INT TERM HUP
	[ -n "$FIO_PID" ] && { kill -TERM "$FIO_PID" 2>/dev/null || true; wait "$FIO_PID" 2>/dev/null || true; }
	for s in "${!PID[@]}"; do
		if [ "$s" = nbd-server ]; then stop_pid "${PID[$s]}" children; else stop_pid "${PID[$s]}"; fi
	done
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

mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd -P)
rm -f "$OUT"/raw/*.json "$OUT/results.tsv" "$OUT/results.md" "$OUT/al.tsv"

# ---------------------------------------------------------------- servers
# Every server gets a page-cached, writeback file (no O_DIRECT), FLUSH -> fdatasync/fsync,
# FUA advertised, default thread counts. Details in docs/benchmarks.md.
start_server() {
	local s=$1 sock=$W/$1.sock
	IMG[$s]=$W/$s.img
	URI[$s]="nbd+unix:///bench?socket=$sock"
	case $s in
	blkrepd | blkrepd-nomd | blkrepd-al4x)
		# One daemon per variant: DIR/$s.toml, control socket $s.ctl, disk $s.img (created
		# by the daemon: with internal metadata it is SIZE plus the metadata area at its
		# end; the export is SIZE either way), NBD socket $s.sock.
		local vol_extra='' rep_extra=''
		case $s in
		blkrepd-nomd) rep_extra='meta_disk = "none"' ;;
		blkrepd-al4x) vol_extra="al_extents = $AL4X_EXTENTS" ;;
		esac
		cat >"$W/$s.toml" <<-EOF
			[cluster]
			name = "bench"

			[[node]]
			name = "bench"
			control_socket = "$s.ctl"

			[[volume]]
			name = "bench"
			size = "$(human_size "$SIZE")"
			$vol_extra

			[[volume.replica]]
			node = "bench"
			disk = "$s.img"
			create = true
			nbd_socket = "$s.sock"
			$rep_extra
		EOF
		"$BLKREPD" --config "$W/$s.toml" --node bench --log-level warn </dev/null >"$W/$s.log" 2>&1 &
		PID[$s]=$!
		;;
	blkrepd-[ABC])
		# A pair: DIR/$s.toml holds both nodes. alpha: control socket $s.ctl, disk $s.img,
		# NBD socket $s.sock (what fio uses), log $s.log; beta: the same names with -beta.
		# Replication on 127.0.0.1, two free ports. The pair is connected and alpha promoted
		# in wait_ready.
		local ports proto=${s#blkrepd-}
		read -r -a ports <<<"$("$PYTHON" "$HELPER" free-ports 2)" || die "no free TCP ports on 127.0.0.1"
		((${#ports[@]} == 2)) || die "no free TCP ports on 127.0.0.1"
		cat >"$W/$s.toml" <<-EOF
			[cluster]
			name = "bench"
			secret = "blkrep-bench-secret-$RANDOM$RANDOM$RANDOM"

			[[node]]
			name = "alpha"
			control_socket = "$s.ctl"
			address = "127.0.0.1:${ports[0]}"

			[[node]]
			name = "beta"
			control_socket = "$s-beta.ctl"
			address = "127.0.0.1:${ports[1]}"

			[[volume]]
			name = "bench"
			size = "$(human_size "$SIZE")"
			protocol = "$proto"
			connect_interval = "1s"

			[[volume.replica]]
			node = "alpha"
			disk = "$s.img"
			create = true
			nbd_socket = "$s.sock"

			[[volume.replica]]
			node = "beta"
			disk = "$s-beta.img"
			create = true
			nbd_socket = "$s-beta.sock"
		EOF
		"$BLKREPD" --config "$W/$s.toml" --node alpha --log-level warn </dev/null >"$W/$s.log" 2>&1 &
		PID[$s]=$!
		"$BLKREPD" --config "$W/$s.toml" --node beta --log-level warn </dev/null >"$W/$s-beta.log" 2>&1 &
		PID[$s/beta]=$!
		;;
	nbdkit)
		# nbdkit serves any export name with the file plugin; cache=default = page cache,
		# FLUSH = fdatasync; default 16 threads.
		truncate -s "$SIZE" "${IMG[$s]}"
		nbdkit --foreground --unix "$sock" file file="${IMG[$s]}" cache=default </dev/null >"$W/nbdkit.log" 2>&1 &
		PID[$s]=$!
		;;
	qemu-nbd)
		# --cache=writeback (qemu-nbd's default: page cache, FLUSH = fdatasync, no O_DIRECT),
		# --aio=threads (its default), --persistent so it survives each fio disconnect.
		truncate -s "$SIZE" "${IMG[$s]}"
		qemu-nbd --format=raw --export-name=bench --socket="$sock" --persistent --shared=4 \
			--cache=writeback --aio="$QEMU_AIO" --discard=ignore --detect-zeroes=off \
			"${IMG[$s]}" </dev/null >"$W/qemu-nbd.log" 2>&1 &
		PID[$s]=$!
		;;
	nbd-server)
		# nbd-server daemonizes (and forks a child per connection); -d would serve one
		# connection and exit. flush/fua must be enabled or it advertises no FLUSH and
		# fio's flushes fail. Default max_threads (4).
		truncate -s "$SIZE" "${IMG[$s]}"
		cat >"$W/nbd-server.conf" <<-EOF
			[generic]
			unixsock = $sock
			allowlist = true

			[bench]
			exportname = ${IMG[$s]}
			flush = true
			fua = true
			trim = true
		EOF
		nbd-server -C "$W/nbd-server.conf" -p "$W/nbd-server.pid" </dev/null >"$W/nbd-server.log" 2>&1 \
			|| { cat "$W/nbd-server.log" >&2; die "nbd-server failed to start"; }
		local i
		for ((i = 0; i < 100; i++)); do
			[ -s "$W/nbd-server.pid" ] && break
			sleep 0.1
		done
		[ -s "$W/nbd-server.pid" ] || die "nbd-server wrote no pid file"
		PID[$s]=$(cat "$W/nbd-server.pid")
		;;
	esac
}

is_pair() { [[ $1 == blkrepd-[ABC] ]]; }

# peer_state SERVER [NODE]: one line of the pair's replication state as seen by alpha (or
# NODE=beta): connection replication disk out_of_sync unacked in_flight reconnects sent
# received rule action ... (report.py peer); fails if the status cannot be read.
peer_state() {
	local ctl=$W/$1.ctl
	[ "${2:-alpha}" = beta ] && ctl=$W/$1-beta.ctl
	"$BLKREP" --socket "$ctl" status --json >"$W/peer.json" 2>>"$W/status.log" &&
		"$PYTHON" "$HELPER" peer "$W/peer.json" 2>>"$W/status.log"
}

# pair_up SERVER: wait (60 s at most) until alpha and beta are Connected and Established with
# nothing out of sync, then make alpha Primary.
pair_up() {
	local s=$1 i n st a b
	for ((i = 0; i < 600; i++)); do
		for n in "$s" "$s/beta"; do
			kill -0 "${PID[$n]}" 2>/dev/null && continue
			tail -n 20 "$W/${n/\//-}.log" >&2 || true
			die "$n exited during start-up (log above)"
		done
		a=$(peer_state "$s" alpha) || a=
		b=$(peer_state "$s" beta) || b=
		if [[ $a == "Connected Established "* && $b == "Connected Established "* ]]; then
			read -r -a st <<<"$a"
			if [ "${st[3]}" = 0 ]; then
				log "$s: alpha and beta connected (handshake rule ${st[9]}, action ${st[10]})"
				timeout 30 "$BLKREP" --socket "$W/$s.ctl" primary bench >>"$W/status.log" 2>&1 ||
					die "$s: could not make alpha Primary (see $W/status.log)"
				return 0
			fi
		fi
		sleep 0.1
	done
	log "$s: alpha sees: ${a:-no status}; beta sees: ${b:-no status}"
	tail -n 10 "$W/$s.log" "$W/$s-beta.log" >&2 || true
	die "$s: alpha and beta not connected and in sync after 60 s"
}

# pair_settle SERVER RECONNECTS0: after a run, wait (30 s at most) until beta has acknowledged
# every write, then check that the pair stayed connected and in sync since the status that
# gave RECONNECTS0. Prints the reason and fails otherwise.
pair_settle() {
	local s=$1 r0=$2 i line st=()
	for ((i = 0; i < 300; i++)); do
		if line=$(peer_state "$s"); then
			read -r -a st <<<"$line"
			[ "${st[4]}" = 0 ] && [ "${st[5]}" = 0 ] && break
		fi
		sleep 0.1
	done
	((${#st[@]} > 0)) || { echo "status unreadable"; return 1; }
	if [ "${st[0]} ${st[1]}" != "Connected Established" ]; then
		echo "alpha is ${st[0]}/${st[1]} after the run"
		return 1
	fi
	if [ "${st[6]}" != "$r0" ]; then
		echo "the pair reconnected during the run ($r0 -> ${st[6]} reconnects)"
		return 1
	fi
	if [ "${st[3]}" != 0 ] || [ "${st[4]}" != 0 ]; then
		echo "${st[3]} bytes out of sync, ${st[4]} unacknowledged after the run"
		return 1
	fi
	return 0
}

wait_ready() {
	local s=$1 i size
	is_pair "$s" && pair_up "$s"
	for ((i = 0; i < 300; i++)); do
		if ! kill -0 "${PID[$s]}" 2>/dev/null; then
			tail -n 20 "$W/$s.log" >&2 || true
			die "$s exited during start-up (log above)"
		fi
		if size=$(nbdinfo --size "${URI[$s]}" 2>/dev/null); then
			[ "$size" = "$SIZE" ] || die "$s exports $size bytes, expected $SIZE"
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$W/$s.log" >&2 || true
	die "$s not ready after 30 s (${URI[$s]})"
}

versions() {
	local s
	if [[ " ${SERVERS[*]} " == *" blkrepd"* ]]; then
		local dirty=
		[ -n "$(git -C "$REPO" status --porcelain -- '*.go' go.mod go.sum 2>/dev/null)" ] && dirty=+dirty
		echo "blkrepd: $("$BLKREPD" --version 2>/dev/null | head -n1 || true) (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$dirty)"
	fi
	for s in "${SERVERS[@]}"; do
		case $s in
		blkrepd | blkrepd-nomd | blkrepd-al4x | blkrepd-[ABC]) ;;
		nbdkit) echo "nbdkit: $(nbdkit --version 2>&1 | head -n1)" ;;
		qemu-nbd) echo "qemu-nbd: $(qemu-nbd --version 2>&1 | head -n1)" ;;
		nbd-server) echo "nbd-server: $(nbd-server -V 2>&1 | grep -m1 version)" ;;
		esac
	done
	echo "fio: $(fio --version)"
}

nruns=$((ROUNDS * ${#WORKLOADS[@]} * ${#SERVERS[@]}))
log "work dir $W ($fstype), size $SIZE, ${#SERVERS[@]} servers x ${#WORKLOADS[@]} workloads x $ROUNDS rounds = $nruns runs of ${RAMP}+${RUNTIME} s (about $(((nruns * (RUNTIME + RAMP + 2) + 59) / 60)) min)"
if [[ " ${SERVERS[*]} " == *" blkrepd-al4x "* ]]; then
	log "blkrepd-al4x: al_extents = $AL4X_EXTENTS ($((AL4X_EXTENTS * 4)) MiB activity log for a $((SIZE >> 20)) MiB working set)"
fi

is_blkrepd() { [[ $1 == blkrepd || $1 == blkrepd-* ]]; }

# status_counters SERVER: print "al_writes io_writes al_evictions" from the daemon's status
# (0 AL writes without metadata); fails if the status cannot be read.
status_counters() {
	"$BLKREP" --socket "$W/$1.ctl" status --json >"$W/status.json" 2>>"$W/status.log" &&
		"$PYTHON" "$HELPER" status-counters "$W/status.json" 2>>"$W/status.log"
}

for s in "${SERVERS[@]}"; do
	start_server "$s"
done
for s in "${SERVERS[@]}"; do
	wait_ready "$s"
	log "$s ready (pid ${PID[$s]}): ${URI[$s]}"
done

# ---------------------------------------------------------------- fill
# Same allocation and content for every server: one random source file copied THROUGH each
# server (nbdcopy ... --flush), so every backing file ends up fully written, none sparse.
log "filling every export through its server with the same $SIZE of random data"
head -c "$SIZE" /dev/urandom >"$W/src.img"
for s in "${SERVERS[@]}"; do
	r0=
	if is_pair "$s"; then
		st=$(peer_state "$s") || die "cannot read $s's status (see $W/status.log)"
		read -r -a st <<<"$st"
		r0=${st[6]}
	fi
	t0=$(date +%s%N)
	nbdcopy --flush "$W/src.img" "${URI[$s]}" || die "nbdcopy into $s failed"
	ms=$((($(date +%s%N) - t0) / 1000000))
	extra=
	if is_blkrepd "$s" && c=$(status_counters "$s"); then
		read -r c_al c_io _ <<<"$c"
		extra="; $c_al AL writes / $c_io writes"
	fi
	if is_pair "$s"; then
		why=$(pair_settle "$s" "$r0") || die "$s: the pair did not stay in sync during the fill: $why"
		extra+="; beta $(du -m "$W/$s-beta.img" 2>/dev/null | cut -f1) MiB allocated, in sync"
	fi
	log "  $s filled in $((ms / 1000)).$((ms % 1000 / 100)) s; backing file $(du -m "${IMG[$s]}" 2>/dev/null | cut -f1) MiB allocated$extra"
done
rm -f "$W/src.img"
sync

# The QD1 latency budget of replication (docs/benchmarks.md, "Replication cost"): one round
# trip on 127.0.0.1 TCP plus one 4 KiB page-cache pwrite on the work directory's filesystem
# (what the peer does for a replicated write), measured now, on this machine.
RTT_US=nan PWRITE_US=nan
if [[ " ${SERVERS[*]} " == *" blkrepd-"[ABC]" "* ]]; then
	if b=$(timeout 60 "$PYTHON" "$HELPER" latency-budget "$W" 2>>"$W/status.log"); then
		read -r RTT_US PWRITE_US <<<"$b"
		log "latency budget: TCP round trip on 127.0.0.1 $RTT_US us, 4 KiB pwrite $PWRITE_US us (median)"
	else
		log "could not measure the latency budget (see $W/status.log)"
	fi
fi

# ---------------------------------------------------------------- runs
printf 'round\tworkload\tserver\tvalue\n' >"$OUT/results.tsv"
printf 'round\tworkload\tserver\tal_writes\tio_writes\tal_evictions\n' >"$OUT/al.tsv"
failures=0
run=0
k=0
for ((r = 1; r <= ROUNDS; r++)); do
	for wl in "${WORKLOADS[@]}"; do
		# Alternate the order run by run: rotate by k, reverse every other run.
		n=${#SERVERS[@]}
		order=()
		for ((i = 0; i < n; i++)); do order+=("${SERVERS[$(((i + k) % n))]}"); done
		if ((k % 2 == 1)); then
			rev=()
			for ((i = n - 1; i >= 0; i--)); do rev+=("${order[$i]}"); done
			order=("${rev[@]}")
		fi
		k=$((k + 1))
		for s in "${order[@]}"; do
			run=$((run + 1))
			json=$OUT/raw/r$r-$wl-$s.json
			if [ "$DO_SYNC" = 1 ]; then sync; fi
			before=
			if is_blkrepd "$s"; then
				before=$(status_counters "$s") || { before=; log "could not read $s's status before the run (see $W/status.log)"; }
			fi
			r0=
			if is_pair "$s"; then
				if st=$(peer_state "$s"); then
					read -r -a st <<<"$st"
					r0=${st[6]}
					[ "${st[0]} ${st[1]} ${st[3]}" = "Connected Established 0" ] ||
						log "$s is ${st[0]}/${st[1]} with ${st[3]} bytes out of sync before the run"
				else
					log "could not read $s's replication state before the run (see $W/status.log)"
				fi
			fi
			# shellcheck disable=SC2086 # WL_ARGS holds several words on purpose
			timeout --kill-after=10 $((RUNTIME + RAMP + 60)) \
				fio --name="$wl" --ioengine=nbd --uri="${URI[$s]}" ${WL_ARGS[$wl]} \
				--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
				--randrepeat=1 --randseed=4242 --norandommap \
				--output-format=json --output="$json" </dev/null >"$W/fio.log" 2>&1 &
			FIO_PID=$!
			rc=0
			wait "$FIO_PID" || rc=$?
			FIO_PID=
			val=nan
			if [ "$rc" = 0 ]; then
				val=$("$PYTHON" "$HELPER" value "$wl" "$json") || val=nan
			else
				log "fio failed (exit $rc) on $s $wl:"
				tail -n 5 "$W/fio.log" >&2 || true
			fi
			if is_pair "$s" && [ "$val" != nan ] && ! why=$(pair_settle "$s" "$r0"); then
				log "$s $wl: not a replicated figure, counted as failed: $why"
				val=nan
			fi
			if [ "$val" = nan ]; then
				failures=$((failures + 1))
				kill -0 "${PID[$s]}" 2>/dev/null || log "$s is no longer running"
			fi
			printf '%s\t%s\t%s\t%s\n' "$r" "$wl" "$s" "$val" >>"$OUT/results.tsv"
			al_note=
			if is_blkrepd "$s"; then
				d_al=nan d_io=nan d_ev=nan
				if [ -n "$before" ] && after=$(status_counters "$s"); then
					read -r al0 io0 ev0 <<<"$before"
					read -r al1 io1 ev1 <<<"$after"
					d_al=$((al1 - al0)) d_io=$((io1 - io0)) d_ev=$((ev1 - ev0))
					al_note=", $d_al AL writes / $d_io writes"
				else
					log "could not read $s's activity-log counters for this run (see $W/status.log)"
				fi
				printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$wl" "$s" "$d_al" "$d_io" "$d_ev" >>"$OUT/al.tsv"
			fi
			log "[$run/$nruns] round $r $wl $s: $val ${WL_UNIT[$wl]}$al_note"
		done
	done
done

# ---------------------------------------------------------------- report
table=$("$PYTHON" "$HELPER" table "$OUT/results.tsv" "$BASE" "${SERVERS[@]}")
detail=$("$PYTHON" "$HELPER" table "$OUT/results.tsv" "$BASE" "${SERVERS[@]}" --detail)
al_table=$("$PYTHON" "$HELPER" al-table "$OUT/results.tsv" "$OUT/al.tsv")
al_detail=$("$PYTHON" "$HELPER" al-table "$OUT/results.tsv" "$OUT/al.tsv" --detail)
repl_table=$("$PYTHON" "$HELPER" repl-table "$OUT/results.tsv" "$OUT/raw" "$RTT_US" "$PWRITE_US")
repl_detail=$("$PYTHON" "$HELPER" repl-table "$OUT/results.tsv" "$OUT/raw" "$RTT_US" "$PWRITE_US" --detail)
repl_note="Replication cost: blkrepd-A/B/C are pairs of daemons on this machine (alpha Primary, beta Secondary, replication over 127.0.0.1 TCP, both images page-cached on $fstype) under protocol A, B or C, otherwise configured as blkrepd; server/blkrepd = median of the per-round ratios to standalone blkrepd; added latency = median over the rounds of the difference of fio's mean write latency (completion, ramp excluded) to blkrepd's; QD1 budget = one TCP round trip on 127.0.0.1 ($RTT_US us) + one 4 KiB page-cache pwrite ($PWRITE_US us) + 100 us, both measured in this run with python3 (interpreter overhead included); targets: 1M seq write >= 0.8 (stretch 0.9), 4k randwrite QD32 >= 0.6 (stretch 0.8), 4k randwrite QD1 added latency <= budget"
# The note above the activity-log table: which activity log each variant has.
al_note="Activity log cost, working set $(human_size "$SIZE"):"
if [[ " ${SERVERS[*]} " == *" blkrepd "* ]]; then
	al_note+=" blkrepd has the default activity log (al_extents 1237, $((1237 * 4)) MiB"
	if ((SIZE <= 1237 * (4 << 20))); then al_note+=", the working set fits);"; else al_note+=", SMALLER than the working set);"; fi
fi
if [[ " ${SERVERS[*]} " == *" blkrepd-al4x "* ]]; then
	al_note+=" blkrepd-al4x has al_extents $AL4X_EXTENTS ($((AL4X_EXTENTS * 4)) MiB, a quarter of the working set);"
fi
al_note+=" server/blkrepd-nomd = median of the per-round ratios to blkrepd without metadata (target for blkrepd: >= 0.95, at most 5 % slower); AL writes per 1000 writes = activity-log records written per 1000 NBD writes during the run (ramp included; the fill before the runs is not counted), median over the rounds"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
note="$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), $mem, Linux $(uname -r), work files on $fstype; size $(human_size "$SIZE"), $ROUNDS rounds x ${RUNTIME} s (+${RAMP} s ramp), unix sockets; figures are medians over the rounds"
if [[ " ${SERVERS[*]} " == *" $BASE "* ]] && ((${#SERVERS[@]} > 1)); then
	note+="; $BASE/peer = median of the per-round ratios (0.85-1.15 = equal)"
fi
{
	echo "# blkrep benchmark"
	echo
	echo "$note"
	echo
	echo "$detail"
	echo
	if [ -n "$al_table" ]; then
		echo "$al_note"
		echo
		echo "$al_detail"
		echo
	fi
	if [ -n "$repl_table" ]; then
		echo "$repl_note"
		echo
		echo "$repl_detail"
		echo
	fi
	echo "Versions:"
	echo
	versions | sed 's/^/- /'
	echo
	echo "Raw fio JSON: raw/r<round>-<workload>-<server>.json; all figures: results.tsv; activity-log counters per run: al.tsv"
} >"$OUT/results.md"

echo "$note"
echo
echo "$table"
if [ -n "$al_table" ]; then
	echo
	echo "$al_note"
	echo
	echo "$al_table"
fi
if [ -n "$repl_table" ]; then
	echo
	echo "$repl_note"
	echo
	echo "$repl_table"
fi
log "results: $OUT/results.md, raw fio JSON in $OUT/raw/"
if ((failures > 0)); then
	log "$failures of $nruns runs failed (n/a in the table)"
	exit 1
fi
