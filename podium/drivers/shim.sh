#!/bin/sh
# Podium task shim: the only process Podium keeps per task (dash: ~0.1-0.4 MB PSS).
#
#   sh shim.sh NOFILE PWD [CGROUP_PROCS_FILE ...] -- STATE_DIR COMMAND [ARG ...]
#
# stdin: the write end of a pipe the starting agent reads; stdout and stderr:
# the task's log files.  NOFILE: the task's soft RLIMIT_NOFILE, or "-".
# PWD: "=VALUE" to give the task PWD=VALUE, "-" for none (dash sets its own).
#
# The agent starts the shim as the leader of a new session and process group.
# A foreground subshell joins the task's cgroups, reports itself (its
# /proc/self/stat line: pid, parent, start time) in STATE_DIR/pid and on the
# pipe, and execs COMMAND: the task keeps that pid, in the shim's group, so
# the agent signals the task and everything it starts with one killpg.  The
# shim traps every signal it can (the first line below; process.py's
# SHIM_TRAPS names the same), waits and writes the exit status to
# STATE_DIR/status.  It outlives the agent, so a restarted agent still learns
# the status (see README.md).  (No `setsid` of the task's own: that exec was
# ~0.7 ms CPU of every task's ~2.6 ms start-up chain.)
#
# Rules this file keeps, and why:
# * The task runs in the FOREGROUND, not with `&`: a non-interactive shell sets
#   SIGINT and SIGQUIT to SIG_IGN in background jobs, the task would inherit
#   that, and kill_signal = "SIGINT" would silently do nothing.
# * The task's environment is exactly the shim's: a variable named like one in
#   it is exported, so assigning it would change what the task sees.  The one
#   variable the subshell needs has a reserved name (the driver refuses a task
#   env that uses it) and is unset; PWD, which dash sets, is put back as the
#   agent asked.  After the task has started, the shim's variables reach no one.
# * No helper is found through PATH (the task's PATH may lack them), and no
#   external command such as mv
#   runs at all: each would cost a fork+exec (~1 ms CPU) per task.
# * The pid and status files are each one write(2) of a short line; a reader
#   sees no file, an empty file, or the whole line (the agent treats empty as
#   "not yet"; it reads status only after the shim has exited).
# * The pipe spares the starting agent from polling for the pid file.  If that
#   agent is already gone, the write kills the subshell (SIGPIPE) before the
#   task starts: a start nobody recorded does not run.
# * `trap :` (a handler; '' would mean "ignore" and be inherited) keeps a signal
#   for the task's group from killing the shim before it records the exit; the
#   subshell and the task get default handlers.  The fault signals (SEGV, BUS,
#   ILL, FPE, TRAP) are not trapped (a handler that returns would loop on a
#   real fault), nor are the real-time ones: the agent sends those, and
#   SIGKILL, to the task alone.
# * While it waits, the shim's stderr is /dev/null: dash reports a child's
#   death by signal ("Killed") there, and that is not the task's output.
# * A setup failure exits 125 before STATE_DIR/pid exists; the agent reports
#   that as a setup error rather than as the task's exit code.
# * The whole program is one { ... } block that ends in `exit`: a shell reads
#   a script as it goes, and a shim waits for hours, so a shim.sh replaced in
#   place meanwhile (an upgrade, an editor) would have it resume at its old
#   offset in the new text, with its own arguments: that once wrote "0" into
#   the helpers named on an older shim's command line.  A compound command is
#   read whole before it runs, and `exit` keeps the shell from reading on.
# * Only a file named cgroup.procs is ever written before the `--`.

{
trap : HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM TSTP TTIN TTOU XCPU XFSZ VTALRM PROF IO PWR SYS
exec 3>&0 0</dev/null 4>&2 2>/dev/null

(
	exec 2>&4 4>&-
	read -r __podium_shim_stat </proc/self/stat || exit 125
	[ "$1" = - ] || ulimit -S -n "$1" || exit 125
	case $2 in -) unset PWD ;; *) PWD=${2#=} ;; esac
	shift 2
	while [ "$1" != -- ]; do
		case $1 in */cgroup.procs) ;; *) exit 125 ;; esac
		echo 0 >"$1" || exit 125
		shift
	done
	echo "$__podium_shim_stat" >"$2/pid" || exit 125
	echo "$__podium_shim_stat" >&3
	exec 3>&-
	unset __podium_shim_stat
	shift 2
	exec "$@"
)

st=$?
exec 2>&4 3>&- 4>&-
while [ "$1" != -- ]; do shift; done
echo "$st" >"$2/status"
exit
}
