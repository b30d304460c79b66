# Shared by scripts/bench.sh and scripts/bench-resync.sh (sourced; set prog first).

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() { echo "$prog: error: $*" >&2; exit 1; }

to_bytes() { # 1GiB, 1G, 512M, 4096 -> bytes (binary units)
	local s=$1 n u
	[[ $s =~ ^([0-9]+)([KkMmGgTt]?)(i?[Bb])?$ ]] || return 1
	n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]}
	case $u in
	'') echo "$n" ;;
	[Kk]) echo $((n << 10)) ;;
	[Mm]) echo $((n << 20)) ;;
	[Gg]) echo $((n << 30)) ;;
	[Tt]) echo $((n << 40)) ;;
	esac
}

human_size() { # bytes -> exact "1GiB" style string (blkrepd's config accepts it)
	local b=$1
	if ((b % (1 << 40) == 0)); then echo "$((b >> 40))TiB"
	elif ((b % (1 << 30) == 0)); then echo "$((b >> 30))GiB"
	elif ((b % (1 << 20) == 0)); then echo "$((b >> 20))MiB"
	else echo "$((b >> 10))KiB"; fi
}

stop_pid() { # pid [children]: SIGTERM (and its children's), SIGKILL after 10 s, reap
	local p=$1 i
	kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
	kill -TERM "$p" 2>/dev/null || true
	[ "${2:-}" = children ] && pkill -TERM -P "$p" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$p" 2>/dev/null; then
		log "$p did not exit on SIGTERM, killing"
		[ "${2:-}" = children ] && pkill -KILL -P "$p" 2>/dev/null || true
		kill -KILL "$p" 2>/dev/null || true
	fi
	wait "$p" 2>/dev/null || true
}
