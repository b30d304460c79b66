#!/bin/sh
# The standalone scenario of tests/qemu (TestStandalone), run by the agent: exercises the REAL blkrepd on a
# real kernel's /dev/nbd0. Runs as root under busybox sh from /init, with
# blkrepd/blkrep (static), e2fsprogs and util-linux' blkdiscard in PATH.
#
# Every step ends with exactly one line "VMSMOKE STEP <id>: PASS (<n>s)" or
# "VMSMOKE STEP <id>: FAIL"; the last line is "VMSMOKE RESULT: PASS|FAIL".
# Individual checks print "  ok   <what>" or "  FAIL <what>".
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

KVER=$(uname -r)
case $KVER in
6.1.*) KSERIES=6.1 ;;
*) KSERIES=$(echo "$KVER" | cut -d. -f1,2) ;;
esac
# NBD_CMD_WRITE_ZEROES exists in the kernel client since 6.12.
HAS_WZ=0
case $KSERIES in 6.1) ;; *) HAS_WZ=1 ;; esac

DIR=/run/blkrep # tmpfs: never on the device the daemon serves
CFG=$DIR/cluster.toml
CTL=$DIR/alpha.ctl
NBDSOCK=$DIR/alpha-r0.sock
IMG=/srv/alpha-r0.img # tmpfs mounted by /init
DEV=/dev/nbd0
SYS=/sys/block/nbd0
MNT=/mnt/r0
BACKEND=blkrep:vmsmoke:r0
VOL_MIB=128
# A request the daemon never answers fails the socket after this long; a
# daemon killed with requests in flight stalls them for up to this long
# after it is back (the kernel resends them only when they time out).
DEVICE_TIMEOUT=10
FS_MIB=96 # the filesystem covers 0..96 MiB; 96..128 MiB is scratch for step 4
# Absolute paths: busybox runs its own applets (mke2fs, blkdiscard) in
# preference to PATH, e.g. under `timeout`.
MKFS=/usr/sbin/mke2fs
E2FSCK=/usr/sbin/e2fsck
BLKDISCARD=/usr/sbin/blkdiscard
FAILS=0
DPID=
NSTART=0

mkdir -p $DIR $MNT /tmp/sums

# ---------------------------------------------------------------- helpers

now() { cut -d. -f1 /proc/uptime; }

begin() {
	STEP=$1
	STEP_FAIL=0
	STEP_T0=$(now)
	echo
	echo "==== VMSMOKE STEP $STEP BEGIN: $2 (t=${STEP_T0}s)"
}

# end: print the step's marker; returns 1 if the step failed.
end() {
	if [ "$STEP_FAIL" = 0 ]; then
		echo "VMSMOKE STEP $STEP: PASS ($(($(now) - STEP_T0))s)"
		return 0
	fi
	echo "VMSMOKE STEP $STEP: FAIL ($(($(now) - STEP_T0))s)"
	FAILS=$((FAILS + 1))
	diagnostics
	return 1
}

ok() { echo "  ok   $*"; }
bad() {
	echo "  FAIL $*"
	STEP_FAIL=1
}

# check WHAT CMD...: run CMD, record ok/FAIL with its exit status.
check() {
	what=$1
	shift
	"$@"
	rc=$?
	if [ $rc = 0 ]; then ok "$what"; else bad "$what (exit $rc: $*)"; fi
	return $rc
}

# run CMD...: echo the command, run it with its output indented.
run() {
	echo "  \$ $*"
	"$@" >/tmp/run.out 2>&1
	rc=$?
	sed 's/^/      /' /tmp/run.out
	return $rc
}

dropcaches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

md5of() { md5sum | cut -d' ' -f1; }

# devmd5 OFF_MIB LEN_MIB: md5 of a range of /dev/nbd0 read with O_DIRECT
# (straight from the daemon, not from the page cache).
devmd5() { dd if=$DEV bs=1M skip="$1" count="$2" iflag=direct 2>/dev/null | md5of; }
imgmd5() { dd if=$IMG bs=1M skip="$1" count="$2" 2>/dev/null | md5of; }
zeromd5() { dd if=/dev/zero bs=1M count="$1" 2>/dev/null | md5of; }

sysval() { cat "$SYS/$1" 2>/dev/null || echo "<absent>"; }

write_config() {
	cat >$CFG <<EOF
# Written by tests/qemu/guest/standalone.sh: examples/standalone.toml with a device.
[cluster]
name = "vmsmoke"

[[node]]
name = "alpha"
control_socket = "alpha.ctl"

[[volume]]
name = "r0"
size = "${VOL_MIB}MiB"
description = "blkrep vm smoke test"
device_timeout = "${DEVICE_TIMEOUT}s"
dead_conn_timeout = "120s"

  [[volume.replica]]
  node = "alpha"
  disk = "$IMG"
  create = true
  nbd_socket = "alpha-r0.sock"
  device = "$DEV"
EOF
}

# start_daemon: blkrepd in the background, its log in $DIR/blkrepd.N.log.
start_daemon() {
	NSTART=$((NSTART + 1))
	DLOG=$DIR/blkrepd.$NSTART.log
	blkrepd --config $CFG --node alpha --log-level debug >$DLOG 2>&1 &
	DPID=$!
	echo "  started blkrepd pid $DPID (log $DLOG)"
}

alive() { [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; }

status_json() { blkrep --config $CFG status --json >/tmp/status.json 2>/tmp/status.err; }

# wait_attached SECONDS: until `blkrep status --json` says the device is attached.
wait_attached() {
	t0=$(now)
	while [ $(($(now) - t0)) -lt "$1" ]; do
		if status_json && grep -q '"state": "attached"' /tmp/status.json; then
			echo "  device attached after $(($(now) - t0))s"
			return 0
		fi
		if ! alive; then
			wait "$DPID"
			echo "  blkrepd pid $DPID exited with status $? before attaching"
			return 1
		fi
		usleep 200000
	done
	echo "  not attached after ${1}s; last status:"
	sed 's/^/      /' /tmp/status.json /tmp/status.err 2>/dev/null
	return 1
}

# counter NAME: an io counter from the last status_json.
counter() { grep "\"$1\":" /tmp/status.json | head -1 | tr -dc 0-9; }

# stop_daemon SIG SECONDS: signal blkrepd, reap it; sets DRC.
stop_daemon() {
	kill -"$1" "$DPID"
	t0=$(now)
	while alive && [ $(($(now) - t0)) -lt "$2" ]; do usleep 100000; done
	if alive; then
		echo "  blkrepd pid $DPID still running ${2}s after SIG$1; killing it"
		kill -9 "$DPID"
	fi
	wait "$DPID"
	DRC=$?
	echo "  blkrepd pid $DPID exited with status $DRC after $(($(now) - t0))s (SIG$1)"
	DPID=
}

# wait_pid PID SECONDS: wait for a background job with a bound; sets WRC.
wait_pid() {
	t0=$(now)
	while kill -0 "$1" 2>/dev/null && [ $(($(now) - t0)) -lt "$2" ]; do usleep 100000; done
	if kill -0 "$1" 2>/dev/null; then
		echo "  pid $1 still running after ${2}s"
		WRC=124
		return 1
	fi
	wait "$1"
	WRC=$?
	echo "  pid $1 finished with status $WRC after $(($(now) - t0))s"
	return 0
}

fsck_clean() { run timeout 120 $E2FSCK -fn $DEV; }
do_mount() { run timeout 60 mount -t ext4 $DEV $MNT; }
do_umount() { run timeout 120 umount $MNT; }
verify_sums() { # verify_sums FILE...: md5sum -c of files relative to $MNT
	for s in "$@"; do
		(cd $MNT && md5sum -c "$s" >/tmp/md5.out 2>&1)
		rc=$?
		if [ $rc != 0 ]; then
			sed 's/^/      /' /tmp/md5.out
			return $rc
		fi
		echo "      $(wc -l <"$s") files match $(basename "$s")"
	done
}

# mkdata DIR NAME MIB: random file DIR/NAME of MIB MiB (+ an odd tail).
mkdata() {
	mkdir -p "$1"
	dd if=/dev/urandom of="$1/$2" bs=1M count="$3" 2>/dev/null
	head -c 4093 /dev/urandom >>"$1/$2"
}

# stage SRC SUMS: record checksums of SRC's files (relative), copy them into
# the filesystem, drop the staging copy.
stage() {
	(cd "$1" && find . -type f | sort | xargs md5sum) >"$2" &&
		cp -a "$1/." $MNT/ &&
		rm -rf "$1"
}

showdev() {
	for f in size backend pid queue/logical_block_size queue/write_cache queue/fua \
		queue/max_sectors_kb queue/discard_max_bytes queue/write_zeroes_max_bytes; do
		echo "      $SYS/$f = $(sysval $f)"
	done
}

diagnostics() {
	echo "  ---- diagnostics (step $STEP) ----"
	echo "  blkrepd pid: ${DPID:-none}"
	if alive; then blkrep --config $CFG status 2>&1 | sed 's/^/      /'; fi
	showdev
	echo "  mounts:"
	grep nbd /proc/mounts | sed 's/^/      /'
	echo "  last daemon log lines:"
	tail -n 30 "$DLOG" 2>/dev/null | sed 's/^/      /'
	echo "  last kernel messages:"
	dmesg | tail -n 30 | sed 's/^/      /'
	echo "  ---- end diagnostics ----"
}

finish() {
	echo
	echo "==== daemon logs"
	for f in $DIR/blkrepd.*.log; do
		[ -f "$f" ] || continue
		echo "---- $f"
		sed 's/^/blkrepd| /' "$f"
	done
	echo "==== kernel log (nbd, ext4, errors)"
	dmesg | grep -iE 'nbd|ext4|jbd2|error|warn|bug|call trace|blocked for' | sed 's/^/kmsg| /'
	echo
	if [ "$FAILS" = 0 ]; then
		echo "VMSMOKE RESULT: PASS kernel $KVER"
	else
		echo "VMSMOKE RESULT: FAIL kernel $KVER ($FAILS step(s) failed)"
	fi
	exit "$FAILS"
}

# ---------------------------------------------------------------- 0: modules
begin 0 "kernel $KVER: ext4 modules (nbd is left for blkrepd to load)"
while read -r m; do
	insmod "/lib/modules/$KVER/$m" 2>/tmp/insmod.err ||
		echo "  insmod $(basename "$m"): $(cat /tmp/insmod.err) (ignored)"
done </etc/vmsmoke-modules
check "ext4 registered" grep -qw ext4 /proc/filesystems
if [ -e /sys/module/nbd ]; then bad "nbd already loaded before blkrepd started"; else ok "nbd not loaded yet"; fi
end || finish

# ---------------------------------------------------------------- 1: attach
begin 1 "start blkrepd with device = $DEV, wait for attached"
write_config
sed 's/^/      /' $CFG
start_daemon
if check "status shows device attached" wait_attached 60; then
	echo "  \$ blkrep status"
	blkrep --config $CFG status 2>&1 | sed 's/^/      /'
	echo "  \$ blkrep status --json"
	sed 's/^/      /' /tmp/status.json
	showdev
	check "backend is $BACKEND" [ "$(sysval backend)" = "$BACKEND" ]
	check "size is ${VOL_MIB} MiB" [ "$(sysval size)" = $((VOL_MIB * 2048)) ]
	check "logical block size 4096" [ "$(sysval queue/logical_block_size)" = 4096 ]
	check "write cache advertised (SEND_FLUSH)" [ "$(sysval queue/write_cache)" = "write back" ]
	check "nbd loaded by blkrepd with nbds_max=0" [ "$(cat /sys/module/nbd/parameters/nbds_max)" = 0 ]
	check "attached with CONNECT" grep -q 'msg="nbd attached".*action=connect' $DLOG
	check "nbd socket $NBDSOCK exists" [ -S $NBDSOCK ]
	check "control socket $CTL exists" [ -S $CTL ]
fi
end || finish

# ---------------------------------------------------------------- 2: ext4
begin 2 "mkfs.ext4, write, fsck, remount, verify"
check "mkfs.ext4 on the first ${FS_MIB} MiB" run timeout 180 $MKFS -t ext4 -F -q -b 4096 \
	-E lazy_itable_init=0,lazy_journal_init=0 $DEV $((FS_MIB * 256))
check "mount" do_mount
mkdata /tmp/d2 a.bin 8
mkdata /tmp/d2 b.bin 3
mkdir -p /tmp/d2/small
i=0
while [ $i -lt 24 ]; do
	head -c $((i * 997 + 1)) /dev/urandom >/tmp/d2/small/f$i
	i=$((i + 1))
done
check "copy files in" stage /tmp/d2 /tmp/sums/2
check "sync" timeout 120 sync
check "umount" do_umount
check "e2fsck -fn clean" fsck_clean
dropcaches
check "remount" do_mount
check "checksums after remount" verify_sums /tmp/sums/2
end

# ---------------------------------------------------------------- 3: restart
begin 3 "kill -9 blkrepd while mounted and writing, restart, RECONFIGURE"
mkdata /tmp/d3 during.bin 16
(cd /tmp/d3 && md5sum during.bin) >/tmp/sums/3
# A writer that keeps rewriting during.bin with O_DIRECT (every 256 KiB goes
# to the device) until told to stop, so that requests are in flight when
# the daemon dies. Every pass writes the same content.
rm -f /tmp/w3.stop /tmp/w3.fail
echo 0 >/tmp/w3.passes
(
	n=0
	while [ ! -e /tmp/w3.stop ]; do
		dd if=/tmp/d3/during.bin of=$MNT/during.bin bs=256k oflag=direct conv=fsync 2>/tmp/w3.err ||
			{ echo "pass $((n + 1)): dd exit $?" >/tmp/w3.fail; exit 1; }
		n=$((n + 1))
		echo $n >/tmp/w3.passes
	done
) &
WPID=$!
t0=$(now)
while [ "$(cat /tmp/w3.passes)" -lt 1 ] && [ $(($(now) - t0)) -lt 60 ]; do usleep 100000; done
usleep 300000
OLDPID=$DPID
P0=$(cat /tmp/w3.passes)
kill -9 "$DPID"
wait "$DPID"
echo "  blkrepd pid $OLDPID killed (wait status $?) while the writer was in pass $((P0 + 1))"
DPID=
sleep 3
P1=$(cat /tmp/w3.passes)
check "writer alive while the daemon is down" kill -0 $WPID
echo "  writer passes completed: $P0 at the kill, $P1 three seconds later"
check "writes blocked while the daemon is down" [ "$P1" -le $((P0 + 1)) ]
echo "  device while the daemon is down:"
showdev
check "device keeps its configuration (backend) while the daemon is down" [ "$(sysval backend)" = "$BACKEND" ]
check "kernel reported the dead link" sh -c "dmesg | grep -qE 'nbd0: (Receive control failed|Dead connection)'"
T_RESTART=$(now)
start_daemon
check "re-attached (status attached)" wait_attached 60
check "attached with RECONFIGURE" grep -q 'msg="nbd attached".*action=reconfigure' $DLOG
check "kernel: reconnected socket" sh -c "dmesg | grep -q 'nbd0: reconnected socket'"
status_json
check "restart recovered from the crash (status: last shutdown crash)" grep -q '"last_shutdown": "crash"' /tmp/status.json
check "metadata flags crashed-primary" grep -q '"crashed-primary"' /tmp/status.json
check "dump-md lists hot extents, all out of sync" sh -c \
	"blkrep --config $CFG dump-md r0 | grep -qE 'hot +[1-9][0-9]* extents' && ! blkrep --config $CFG dump-md r0 --json | grep -q '\"dirty_bytes\": 0,'"
t0=$(now)
P2=$P1
while [ "$(cat /tmp/w3.passes)" -le "$P2" ] && [ ! -e /tmp/w3.fail ] && [ $(($(now) - t0)) -lt 120 ]; do usleep 100000; done
P2=$(cat /tmp/w3.passes)
check "writer made progress after the restart (passes $P1 -> $P2, $(($(now) - T_RESTART))s after restart)" [ "$P2" -gt "$P1" ]
touch /tmp/w3.stop
if wait_pid $WPID 120; then
	[ -e /tmp/w3.fail ] && sed 's/^/      writer: /' /tmp/w3.fail /tmp/w3.err
	check "writer finished without errors ($(cat /tmp/w3.passes) passes)" [ "$WRC" = 0 ]
else
	bad "writer still running 120s after the stop request"
fi
rm -rf /tmp/d3
mkdata /tmp/d3b more.bin 4
echo "after restart $(date)" >/tmp/d3b/note.txt
check "write more files after restart" stage /tmp/d3b /tmp/sums/3b
check "sync" timeout 120 sync
dropcaches
check "all checksums (before, during, after the restart)" verify_sums /tmp/sums/2 /tmp/sums/3 /tmp/sums/3b
check "umount" do_umount
check "e2fsck -fn clean" fsck_clean
end

# ---------------------------------------------------------------- 4: discard
begin 4 "blkdiscard and blkdiscard -z on the unmounted scratch range ${FS_MIB}..${VOL_MIB} MiB"
showdev
SCR=$((VOL_MIB - FS_MIB)) # 32 MiB
HALF=$((SCR / 2))
dd if=/dev/urandom of=/tmp/r4 bs=1M count=$SCR 2>/dev/null
R_ALL=$(md5of </tmp/r4)
R_HI=$(dd if=/tmp/r4 bs=1M skip=$HALF 2>/dev/null | md5of)
Z_HALF=$(zeromd5 $HALF)
check "fill scratch range" dd if=/tmp/r4 of=$DEV bs=1M seek=$FS_MIB oflag=direct conv=fsync 2>/dev/null
rm -f /tmp/r4
check "scratch range reads back" [ "$(devmd5 $FS_MIB $SCR)" = "$R_ALL" ]
status_json
T0=$(counter trims)
Z0=$(counter write_zeroes)
W0=$(counter writes)
check "blkdiscard ${FS_MIB}M+${HALF}M (TRIM)" run timeout 120 $BLKDISCARD -f -v \
	-o $((FS_MIB << 20)) -l $((HALF << 20)) $DEV
status_json
T1=$(counter trims)
check "daemon counted TRIM requests ($T0 -> $T1)" [ "$T1" -gt "$T0" ]
check "discarded range reads zeroes" [ "$(devmd5 $FS_MIB $HALF)" = "$Z_HALF" ]
check "discarded range is zero in the disk file" [ "$(imgmd5 $FS_MIB $HALF)" = "$Z_HALF" ]
check "range after it untouched" [ "$(devmd5 $((FS_MIB + HALF)) $HALF)" = "$R_HI" ]
check "blkdiscard -z $((FS_MIB + HALF))M+${HALF}M (BLKZEROOUT)" run timeout 120 $BLKDISCARD -f -v -z \
	-o $(((FS_MIB + HALF) << 20)) -l $((HALF << 20)) $DEV
status_json
Z1=$(counter write_zeroes)
W1=$(counter writes)
echo "  daemon counters: write_zeroes $Z0 -> $Z1, writes $W0 -> $W1"
if [ $HAS_WZ = 1 ]; then
	check "zero-out arrived as WRITE_ZEROES ($Z0 -> $Z1)" [ "$Z1" -gt "$Z0" ]
else
	echo "  (kernel $KSERIES has no NBD WRITE_ZEROES: the block layer writes zero pages)"
	check "zero-out arrived as WRITEs ($W0 -> $W1)" [ "$W1" -gt "$W0" ]
fi
check "zeroed range reads zeroes" [ "$(devmd5 $((FS_MIB + HALF)) $HALF)" = "$Z_HALF" ]
check "zeroed range is zero in the disk file" [ "$(imgmd5 $((FS_MIB + HALF)) $HALF)" = "$Z_HALF" ]
check "filesystem untouched: e2fsck -fn clean" fsck_clean
check "mount" do_mount
check "all checksums" verify_sums /tmp/sums/2 /tmp/sums/3 /tmp/sums/3b
check "umount" do_umount
end

# ---------------------------------------------------------------- stall
begin stall "blkrepd stalled (SIGSTOP) past device_timeout: the kernel drops the socket, blkrepd re-attaches by itself"
dd if=/dev/urandom of=/tmp/s.bin bs=1M count=1 2>/dev/null
S_MD5=$(md5of </tmp/s.bin)
K0=$(dmesg | wc -l)
L0=$(grep -c 'msg="nbd attached"' $DLOG)
kill -STOP "$DPID"
T_STOP=$(now)
dd if=/tmp/s.bin of=$DEV bs=1M seek=$FS_MIB oflag=direct conv=fsync 2>/tmp/s.err &
SPID=$!
# The request times out in the send (socket buffer full: "Send data failed
# (result -11)") or waiting for the reply ("Connection timed out"); either
# way the kernel marks the socket dead ("Dead connection") and shuts it down.
while ! dmesg | tail -n +$((K0 + 1)) | grep -q 'nbd0: Dead connection' && [ $(($(now) - T_STOP)) -lt 60 ]; do
	usleep 200000
done
dmesg | tail -n +$((K0 + 1)) | sed 's/^/      kmsg| /'
check "kernel timed the request out and dropped the socket (after $(($(now) - T_STOP))s, device_timeout ${DEVICE_TIMEOUT}s)" \
	sh -c "dmesg | tail -n +$((K0 + 1)) | grep -q 'nbd0: Dead connection'"
check "write still pending" kill -0 $SPID
sleep 1
kill -CONT "$DPID"
T_CONT=$(now)
while [ "$(grep -c 'msg="nbd attached"' $DLOG)" -le "$L0" ] && alive && [ $(($(now) - T_CONT)) -lt 30 ]; do
	usleep 200000
done
grep -E 'dropped|re-attach' $DLOG | sed 's/^/      blkrepd| /'
check "blkrepd noticed the dropped socket" grep -q 'kernel dropped the device connection' $DLOG
check "blkrepd re-attached by RECONFIGURE ($(($(now) - T_CONT))s after SIGCONT)" \
	sh -c "grep 'msg=\"nbd attached\"' $DLOG | tail -n 1 | grep -q action=reconfigure"
check "status attached" wait_attached 30
if wait_pid $SPID 60; then
	check "pending write completed" [ "$WRC" = 0 ]
else
	bad "pending write did not complete"
fi
check "written data reads back" [ "$(devmd5 $FS_MIB 1)" = "$S_MD5" ]
rm -f /tmp/s.bin
end

# ---------------------------------------------------------------- 5: SIGTERM
begin 5 "SIGTERM: exit 0, device detached, sockets removed"
stop_daemon TERM 60
check "blkrepd exit status 0" [ "$DRC" = 0 ]
showdev
check "device size 0" [ "$(sysval size)" = 0 ]
check "no pid (not connected)" [ ! -e $SYS/pid ]
check "no backend" [ ! -e $SYS/backend ]
check "kernel: disconnected by request" sh -c "dmesg | grep -q 'nbd0: Disconnected due to user request'"
check "control socket removed" [ ! -e $CTL ]
check "nbd socket removed" [ ! -e $NBDSOCK ]
check "daemon logged a clean stop" grep -q 'blkrepd stopped cleanly' $DLOG
check "dump-md: activity log clean after the clean stop" sh -c "blkrep --config $CFG dump-md r0 --json | grep -q '\"clean\": true'"
if blkrep --config $CFG status >/tmp/st.out 2>&1; then
	bad "blkrep status still answers after the daemon stopped"
else
	ok "blkrep status fails after stop: $(head -1 /tmp/st.out)"
fi
end

# ---------------------------------------------------------------- 6: again
begin 6 "start again on the detached device (CONNECT), verify, SIGTERM"
start_daemon
check "attached again" wait_attached 60
check "attached with CONNECT" grep -q 'msg="nbd attached".*action=connect' $DLOG
check "e2fsck -fn clean" fsck_clean
check "mount" do_mount
check "all checksums" verify_sums /tmp/sums/2 /tmp/sums/3 /tmp/sums/3b
check "umount" do_umount
stop_daemon TERM 60
check "blkrepd exit status 0" [ "$DRC" = 0 ]
check "device size 0" [ "$(sysval size)" = 0 ]
check "sockets removed" sh -c "[ ! -e $CTL ] && [ ! -e $NBDSOCK ]"
end

# ---------------------------------------------------------------- klog
begin klog "kernel log has no I/O errors, filesystem errors, warnings or hangs"
if dmesg | grep -E 'EXT4-fs error|EXT4-fs warning|I/O error|Buffer I/O|WARNING:|BUG:|Call Trace|blocked for more than|Oops' >/tmp/klog.bad; then
	sed 's/^/      /' /tmp/klog.bad
	bad "kernel log has errors (above)"
else
	ok "none found"
fi
end

# ---------------------------------------------------------------- pkg
begin pkg "nbd/kernel package smoke (toy server, tests/qemu/nbdsmoke)"
if [ -x /usr/bin/nbdsmoke ]; then
	# It keeps up to four 64 MiB in-memory disks and mlockall()s: free the
	# daemon's disk image (the daemon is gone) or it runs out of memory.
	rm -f $IMG
	dropcaches
	grep -E 'MemTotal|MemAvailable' /proc/meminfo | sed 's/^/      /'
	/usr/bin/nbdsmoke >/tmp/pkg.out 2>&1 &
	PK=$!
	if ! wait_pid $PK 90; then
		echo "  nbdsmoke hangs; kernel stacks of its threads:"
		for t in /proc/$PK/task/*; do
			echo "    task ${t##*/} $(cat $t/comm) $(grep State: $t/status) wchan=$(cat $t/wchan)"
			sed 's/^/        /' $t/stack
		done
		kill -QUIT $PK # Go prints every goroutine's stack
		wait_pid $PK 10 || kill -9 $PK
	fi
	sed 's/^/      /' /tmp/pkg.out
	check "SMOKE: PASS (exit $WRC)" grep -q '^SMOKE: PASS' /tmp/pkg.out
else
	ok "skipped (not in the initramfs)"
fi
end

finish
