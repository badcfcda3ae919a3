#!/usr/bin/env bash
# Log shipping bench: one file of N 100-byte lines -> bake-logship -> logsink (a local
# CloudWatch Logs endpoint that checks every PutLogEvents limit and the line sequence).
# Prints lines/s end to end, CPU-seconds of the shipper per million lines, and its peak RSS.
#
# Usage: bench/logs.sh [LINES] [PROFILE]   (defaults: 2000000 lines, debug = the dev build;
#        PROFILE=release uses target/release, built with `cargo build --release -p bake-agent -p logsink`)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-2000000}
profile=${2:-debug}
bin=target/$profile
if [[ $profile == debug ]]; then
  cargo build -q -p bake-agent --bin bake-logship -p logsink
fi
work=$(mktemp -d)
cleanup() {
  if [[ -n ${sink_pid:-} ]]; then kill "$sink_pid" 2> /dev/null || true; fi
  if [[ -n ${ship_pid:-} ]]; then kill -KILL "$ship_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/logs"
# N lines of exactly 100 bytes: "%09d " + 90 x's + "\n".
python3 - "$lines" "$work/logs/app.log" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
pad = "x" * 90
with open(path, "w") as f:
    for start in range(0, n, 100000):
        f.write("".join(f"{i:09d} {pad}\n" for i in range(start, min(n, start + 100000))))
PY
"$bin/logsink" --check-sequence > "$work/sink.out" &
sink_pid=$!
for _ in $(seq 100); do grep -q listening "$work/sink.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/sink.out")
cat > "$work/ship.toml" <<TOML
instance_id = "i-bench"
[logs]
state_dir = "$work/state"
poll_interval = "50ms"
[[logs.files]]
path = "$work/logs/*.log"
log_group = "/bench"
log_stream = "{instance_id}"
TOML
start=$(date +%s.%N)
AWS_ENDPOINT_URL=$url AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
  AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn "$bin/bake-logship" "$work/ship.toml" &
ship_pid=$!
events=0
deadline=$(( $(date +%s) + 600 ))
while (( events < lines )) && (( $(date +%s) < deadline )); do
  sleep 0.05
  events=$(curl -s "$url/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')
done
end=$(date +%s.%N)
clk=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$ship_pid/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$ship_pid/status")
kill -TERM "$ship_pid"; wait "$ship_pid" || true; ship_pid=
stats=$(curl -s "$url/stats")
python3 - "$lines" "$start" "$end" "$utime" "$stime" "$clk" "$hwm" "$stats" "$profile" <<'PY'
import json, sys
n, start, end, ut, st, clk, hwm, stats, profile = sys.argv[1:]
n = int(n); secs = float(end) - float(start); cpu = (int(ut) + int(st)) / int(clk)
s = json.loads(stats)
print(f"profile:             {profile}")
print(f"lines:               {n} (sink got {s['events']} events in {s['requests']} requests)")
print(f"elapsed:             {secs:.2f} s -> {n / secs:,.0f} lines/s")
print(f"shipper CPU:         {cpu:.2f} s -> {cpu / (n / 1e6):.2f} CPU-s per million lines")
print(f"shipper peak RSS:    {int(hwm) / 1024:.1f} MiB")
print(f"limit violations:    {s['violations']}   sequence errors: {s['sequence_errors']}")
sys.exit(0 if s['events'] >= n and s['violations'] == 0 and s['sequence_errors'] == 0 else 1)
PY
