#!/usr/bin/env bash
# side_by_side.sh LOGDIR NAME COMMAND [NAME COMMAND]...
#
# Runs every COMMAND at the same time: the last one in the foreground, its output live; each
# other one into LOGDIR/NAME.log, shown once the foreground one has ended and it has too. Every
# command runs to its end, whatever the others do (each tears down what it brought up), and the
# exit status is 0 only if all of them succeeded. `make test` runs its lab-bound suites so: each
# waits mostly on its own lab's hosts, so on two cores they end sooner side by side.
set -uo pipefail

if [ $# -lt 3 ] || [ $(($# % 2)) -ne 1 ]; then
    echo "usage: $0 LOGDIR NAME COMMAND [NAME COMMAND]..." >&2
    exit 2
fi
logdir=$1
shift
mkdir -p "$logdir"

names=()
pids=()
while [ $# -gt 2 ]; do
    log="$logdir/$1.log"
    echo "$1: started beside the others, output in $log (shown when it ends)"
    bash -c "$2" >"$log" 2>&1 &
    names+=("$1")
    pids+=($!)
    shift 2
done

bash -c "$2"
last=$?
summary="$1: exit $last"
failed=$((last != 0))
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    status=$?
    echo "--- ${names[$i]} (ran beside): exit $status"
    cat "$logdir/${names[$i]}.log"
    summary+=", ${names[$i]}: exit $status"
    failed=$((failed || status != 0))
done
echo "--- $summary"
exit "$failed"
