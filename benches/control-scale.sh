#!/usr/bin/env bash
# Scale benchmark of `ocean control` (not part of CI); see benches/README.md.
#
#   benches/control-scale.sh                                   # 10,000 apps / 100,000 tasks, 1000 subscribers
#   benches/control-scale.sh --apps 20000 --tasks-per-app 5 --subscribers 2000
#
# The fan-out part runs control and its long-polling clients in one process: every
# connection costs two file descriptors, so the open-files limit is raised first.
set -euo pipefail
cd "$(dirname "$0")/.."

want=65536
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    want=$hard
fi
ulimit -n "$want" || echo "warning: could not raise the open files limit (now $(ulimit -n))" >&2

# The benchmark reports its own memory (VmRSS / VmHWM from /proc/self/status). It resets
# VmHWM between parts, and that also resets the peak that /usr/bin/time would report, so
# the script does not run it under GNU time.
exec cargo bench -p ocean-control --bench scale -- "$@"
