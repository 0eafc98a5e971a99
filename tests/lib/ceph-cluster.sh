#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# A throw-away single-host Ceph cluster for the rbd tests, from Debian 12's
# ceph 16 packages: one monitor, one manager and three memstore OSDs on
# 127.0.0.1, replica size 2 (min_size 1), auth off, one pool "rbd" ready for
# images.  Everything lives in a fresh directory; every daemon's pid is
# recorded there, and stop kills exactly those.
#
# Sourced by a test (preferred: the cluster goes away with the test):
#
#	. "$SRCDIR/tests/lib/ceph-cluster.sh"
#	ceph_cluster_start            # or skips (exit 77) if ceph is not installed
#	rbd -c "$CEPH_CONF" ls        # CEPH_CONF, CEPH_DIR, CEPH_POOL are set
#	ceph_osd_kill 1; ceph_osd_start 1; ceph_cluster_halt; ceph_cluster_resume
#	                              # (ceph_cluster_stop runs from the EXIT trap)
#
# Or run from the command line:
#
#	tests/lib/ceph-cluster.sh start [DIR]   prints the directory; daemons keep running
#	tests/lib/ceph-cluster.sh env DIR       prints export lines for a shell
#	tests/lib/ceph-cluster.sh stop DIR      kills the daemons, removes DIR
#
# Leftovers of a killed run do no harm: every cluster has its own directory
# and ports, and a start first reaps clusters whose owner process is gone.

CEPH_POOL=${CEPH_POOL:-rbd}
CEPH_OSDS=${CEPH_OSDS:-3}
# memstore keeps objects in RAM; this is only the capacity it reports.
CEPH_OSD_BYTES=${CEPH_OSD_BYTES:-$((1024 * 1024 * 1024))}

_ceph_log() {
	[ -n "${CEPH_QUIET:-}" ] || echo "ceph-cluster: $*" >&2
}

_ceph_need() {
	local t
	for t in ceph-mon ceph-mgr ceph-osd ceph rbd monmaptool ceph-authtool python3; do
		if ! command -v "$t" >/dev/null; then
			echo "SKIP: $t not installed (scripts/install-deps installs ceph 16)"
			exit 77
		fi
	done
}

# A TCP port nobody listens on now.
_ceph_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Kill the daemons listed in DIR/pids and remove DIR.
_ceph_reap_dir() {
	local d=$1 p
	[ -f "$d/pids" ] || { rm -rf "$d"; return 0; }
	while read -r p _; do kill -9 "$p" 2>/dev/null || true; done <"$d/pids"
	rm -rf "$d"
}

# Clusters left by runs that were killed: their owner is no longer alive.
_ceph_reap_stale() {
	local d owner
	for d in "${TMPDIR:-/tmp}"/vdisk-ceph.*; do
		[ -d "$d" ] && [ -f "$d/owner" ] || continue
		owner=$(cat "$d/owner")
		kill -0 "$owner" 2>/dev/null && continue
		_ceph_log "removing the cluster of dead process $owner in $d"
		_ceph_reap_dir "$d"
	done
}

# _ceph_spawn NAME CMD...: start a daemon in the foreground mode (-f) in the
# background, record its pid.
_ceph_spawn() {
	local name=$1
	shift
	"$@" -f >>"$CEPH_DIR/log/$name.out" 2>&1 &
	echo "$! $name" >>"$CEPH_DIR/pids"
}

_ceph_pid_of() {
	awk -v n="$1" '$2 == n { p = $1 } END { print p }' "$CEPH_DIR/pids"
}

_ceph() {
	timeout 60 ceph -c "$CEPH_CONF" --connect-timeout 20 "$@"
}

_ceph_write_conf() {
	cat >"$CEPH_CONF" <<EOF
[global]
fsid = $CEPH_FSID
mon host = [v2:127.0.0.1:$CEPH_MON_PORT]
public addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = $CEPH_PORT_MIN
ms bind port max = $CEPH_PORT_MAX
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
keyring = $CEPH_DIR/keyring
osd pool default size = 2
osd pool default min size = 1
osd pool default pg num = 16
osd pool default pgp num = 16
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = $CEPH_OSD_BYTES
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon osd min down reporters = 1
mon osd down out interval = 0
mon data avail warn = 1
mon data avail crit = 0
osd heartbeat interval = 1
osd heartbeat grace = 4
osd fast fail on connection refused = true
mgr initial modules =
debug ms = 0
crash dir = $CEPH_DIR/crash
[client]
# Clients (many at once in the tests) need no admin socket.
admin socket =
[mon]
mon data = $CEPH_DIR/mon.\$id
[mgr]
mgr data = $CEPH_DIR/mgr.\$id
[osd]
osd data = $CEPH_DIR/osd.\$id
osd journal size = 16
EOF
}

# ceph_osd_start ID: start OSD ID (created by ceph_cluster_start).
ceph_osd_start() {
	_ceph_spawn "osd.$1" ceph-osd -c "$CEPH_CONF" -i "$1"
}

# ceph_osd_kill ID: SIGKILL OSD ID, as a crash would.
ceph_osd_kill() {
	local p
	p=$(_ceph_pid_of "osd.$1")
	[ -n "$p" ] || return 1
	kill -9 "$p" 2>/dev/null || true
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
}

# ceph_wait_clean [SECONDS]: until every PG is active+clean.
ceph_wait_clean() {
	local limit=${1:-60} i out
	for ((i = 0; i < limit * 4; i++)); do
		out=$(_ceph pg stat 2>/dev/null) || out=
		# "16 pgs: 16 active+clean; ..." : every PG in one state, that one clean.
		if [[ $out =~ ^([0-9]+)\ pgs:\ ([0-9]+)\ active\+clean\; ]] &&
			[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; then
			return 0
		fi
		sleep 0.25
	done
	echo "ceph-cluster: PGs not clean after ${limit}s: $out" >&2
	return 1
}

# _ceph_make_osd ID: register OSD ID with the monitor, make its store,
# start it; touches osd.ID/made when all went well.
_ceph_make_osd() {
	local uuid
	uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
	_ceph osd new "$uuid" "$1" >/dev/null || return 1
	mkdir -p "$CEPH_DIR/osd.$1"
	ceph-osd -c "$CEPH_CONF" -i "$1" --mkfs --osd-uuid "$uuid" \
		>>"$CEPH_DIR/log/mkfs.out" 2>&1 || return 1
	ceph_osd_start "$1"
	touch "$CEPH_DIR/osd.$1/made"
}

# ceph_cluster_start [DIR]: create and start the cluster; exports CEPH_DIR,
# CEPH_CONF, CEPH_POOL.  Installs an EXIT trap that stops it unless
# CEPH_NO_TRAP is set (the command-line start).
ceph_cluster_start() {
	local t0 id
	_ceph_need
	t0=$(date +%s.%N)
	_ceph_reap_stale
	CEPH_DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/vdisk-ceph.XXXXXX")}
	mkdir -p "$CEPH_DIR"/{run,log,crash,mon.a,mgr.x}
	echo "${CEPH_OWNER:-$$}" >"$CEPH_DIR/owner"
	: >"$CEPH_DIR/pids"
	CEPH_CONF=$CEPH_DIR/ceph.conf
	export CEPH_DIR CEPH_CONF CEPH_POOL
	if [ -z "${CEPH_NO_TRAP:-}" ]; then
		# shellcheck disable=SC2064
		trap "ceph_cluster_stop; $(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")" EXIT
	fi
	CEPH_FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
	CEPH_MON_PORT=$(_ceph_free_port)
	# A private range for the other daemons: 40 ports starting at a
	# random point, so that two clusters rarely meet (a taken port is
	# skipped by the daemon anyway).
	CEPH_PORT_MIN=$((20000 + RANDOM % 20000))
	CEPH_PORT_MAX=$((CEPH_PORT_MIN + 40))
	_ceph_write_conf
	echo "$CEPH_MON_PORT" >"$CEPH_DIR/mon-port"

	ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. \
		--cap mon 'allow *' >/dev/null || return 1
	monmaptool --create --clobber --fsid "$CEPH_FSID" \
		--addv a "[v2:127.0.0.1:$CEPH_MON_PORT]" "$CEPH_DIR/monmap" >/dev/null || return 1
	ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
		--keyring "$CEPH_DIR/keyring" >>"$CEPH_DIR/log/mkfs.out" 2>&1 || {
		cat "$CEPH_DIR/log/mkfs.out" >&2
		return 1
	}
	_ceph_spawn mon.a ceph-mon -c "$CEPH_CONF" -i a
	_ceph_spawn mgr.x ceph-mgr -c "$CEPH_CONF" -i x
	# The OSDs are registered, made and started in parallel: each ceph
	# command costs a second of python here.  The pool is created meanwhile.
	local jobs=()
	for ((id = 0; id < CEPH_OSDS; id++)); do
		_ceph_make_osd "$id" &
		jobs+=($!)
	done
	_ceph osd pool create "$CEPH_POOL" 16 16 >/dev/null 2>&1 || return 1
	wait "${jobs[@]}" # not a bare wait: the mon and mgr are children too
	for ((id = 0; id < CEPH_OSDS; id++)); do
		[ -e "$CEPH_DIR/osd.$id/made" ] || {
			cat "$CEPH_DIR/log/mkfs.out" >&2
			return 1
		}
	done
	timeout 60 rbd -c "$CEPH_CONF" pool init "$CEPH_POOL" || return 1
	ceph_wait_clean 60 || return 1
	_ceph_log "up in $(python3 -c "import time; print('%.1f' % (time.time() - $t0))") s: $CEPH_DIR (mon 127.0.0.1:$CEPH_MON_PORT)"
}

# ceph_cluster_stop: kill every daemon recorded, remove the directory.
ceph_cluster_stop() {
	[ -n "${CEPH_DIR:-}" ] && [ -d "$CEPH_DIR" ] || return 0
	local p
	while read -r p _; do kill -9 "$p" 2>/dev/null || true; done <"$CEPH_DIR/pids"
	while read -r p _; do wait "$p" 2>/dev/null || true; done <"$CEPH_DIR/pids"
	rm -rf "$CEPH_DIR"
	CEPH_DIR=
}

# ceph_cluster_halt: stop every daemon (SIGSTOP: the cluster stops
# answering, as a partitioned or dead one does); ceph_cluster_resume
# undoes it.
ceph_cluster_halt() {
	local p
	while read -r p _; do kill -STOP "$p" 2>/dev/null || true; done <"$CEPH_DIR/pids"
}

ceph_cluster_resume() {
	local p
	while read -r p _; do kill -CONT "$p" 2>/dev/null || true; done <"$CEPH_DIR/pids"
}

# The command line.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -eu
	case "${1:-}" in
	start)
		CEPH_NO_TRAP=1
		CEPH_OWNER=${CEPH_OWNER:-1} # init: never reaped as stale
		ceph_cluster_start "${2:-}" || {
			ceph_cluster_stop
			exit 1
		}
		echo "$CEPH_DIR"
		;;
	env)
		[ -d "${2:-}" ] || { echo "usage: $0 env DIR" >&2; exit 2; }
		echo "export CEPH_DIR=$2 CEPH_CONF=$2/ceph.conf CEPH_POOL=$CEPH_POOL"
		;;
	stop)
		[ -d "${2:-}" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
		_ceph_reap_dir "$2"
		;;
	*)
		echo "usage: $0 start [DIR] | env DIR | stop DIR" >&2
		exit 2
		;;
	esac
fi
