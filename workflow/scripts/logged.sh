#!/usr/bin/env bash
# logged.sh LOG COMMAND...: run COMMAND with its output in LOG; when it fails, print LOG's
# last lines (the one-line error) to the console, where Snakemake otherwise shows only
# "Error in rule".
log=$1
shift
"$@" > "$log" 2>&1 && exit 0
status=$?
echo "--- last lines of $log:" >&2
tail -n 5 "$log" >&2
exit "$status"
