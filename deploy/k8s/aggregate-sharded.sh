#!/usr/bin/env bash
# One sharded aggregation: the shard pods of CronJob sohoa-aggregate-shards (an Indexed
# Job), and once every shard has succeeded, the merge of sohoa-aggregate-merge. The merge
# must not start earlier: it would add up another run's shard counts.
#   NAMESPACE=sohoa deploy/k8s/aggregate-sharded.sh
# Suspend the hourly sohoa-aggregate while you use this mode.
set -euo pipefail

ns=${NAMESPACE:-sohoa}
timeout=${TIMEOUT_SECONDS:-7200}
run=$(date -u +%Y%m%d-%H%M%S)

# Waits for a Job to succeed; fails as soon as it has failed (kubectl wait would hang).
wait_job() {
  local job=$1 waited=0 complete failed
  while :; do
    complete=$(kubectl -n "$ns" get job "$job" -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')
    failed=$(kubectl -n "$ns" get job "$job" -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')
    if [ "$complete" = "True" ]; then return 0; fi
    if [ "$failed" = "True" ]; then
      echo "job $job failed: kubectl -n $ns logs job/$job" >&2
      return 1
    fi
    if [ "$waited" -ge "$timeout" ]; then
      echo "job $job still running after ${timeout}s" >&2
      return 1
    fi
    sleep 10
    waited=$((waited + 10))
  done
}

kubectl -n "$ns" create job "sohoa-aggregate-shards-$run" --from=cronjob/sohoa-aggregate-shards
wait_job "sohoa-aggregate-shards-$run"
kubectl -n "$ns" create job "sohoa-aggregate-merge-$run" --from=cronjob/sohoa-aggregate-merge
wait_job "sohoa-aggregate-merge-$run"
echo "sharded aggregation $run done"
