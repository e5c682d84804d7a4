#!/bin/sh
# Quick ingest check, not the benchmark of record (that is the benchmark issue's work): 500 CT
# slices (512x512, 16-bit, ~0.5 MB) sent with dcmtk storescu on one association to Pergamon
# (embedded default: SQLite, fsync on) and to dcmtk's storescp writing files with no index.
# Prints instances/s for two rounds. Usage: benchmarks/quick_ingest.sh  (needs dcmtk and ./run's .venv)
set -eu
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'kill $P $S 2>/dev/null; rm -rf "$WORK"' EXIT
export TCP_NODELAY=1
.venv/bin/python - "$WORK/ct" <<'PY'
import pathlib, sys
sys.path.insert(0, "tests")
import samples
dest = pathlib.Path(sys.argv[1]); dest.mkdir()
samples.ct_series(dest, 500)
PY
mkdir -p "$WORK/scp"
PERGAMON_DICOM_PORT=11301 PERGAMON_HTTP_PORT=18301 PERGAMON_AUDIT_REPOSITORY_UDP_PORT=15514 \
    PERGAMON_AUDIT_REPOSITORIES=udp://127.0.0.1:15514 PERGAMON_SERVER_DATA_DIR="$WORK/pg" \
    .venv/bin/pergamon serve 2>"$WORK/pergamon.log" &
P=$!
storescp -od "$WORK/scp" +B 11302 2>/dev/null &
S=$!
sleep 3
rate() { echo "500 / ($2 - $1)" | bc -l | cut -c1-6; }
for round in 1 2; do
    a=$(date +%s.%N); storescu -aec PERGAMON 127.0.0.1 11301 +sd "$WORK/ct"; b=$(date +%s.%N)
    echo "round $round pergamon: $(rate "$a" "$b") instances/s"
    a=$(date +%s.%N); storescu 127.0.0.1 11302 +sd "$WORK/ct"; b=$(date +%s.%N)
    echo "round $round storescp: $(rate "$a" "$b") instances/s"
done
