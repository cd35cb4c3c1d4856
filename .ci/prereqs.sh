#!/usr/bin/env bash
# What `make test` needs besides Python packages, checked before anything runs: each missing piece is
# named with the exact command that installs or starts it (Debian/Ubuntu). ffmpeg is not needed: the
# imageio-ffmpeg wheel brings one when the system has none.
set -uo pipefail

missing=0
need() {  # need WHAT COMMAND-TO-FIX
  echo "missing: $1" >&2
  echo "    fix (as root): $2" >&2
  missing=1
}

command -v fluidsynth >/dev/null 2>&1 \
  || need "FluidSynth (renders the corpus tests' MIDI)" "apt-get install -y fluidsynth"
[ -f "/usr/share/sounds/sf2/FluidR3_GM.sf2" ] \
  || need "the General MIDI soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2" \
    "apt-get install -y fluid-soundfont-gm"
[ -d /usr/share/fonts/truetype/dejavu ] || [ -d /usr/share/fonts/dejavu ] \
  || need "the DejaVu fonts (title cards of the X videos)" "apt-get install -y fonts-dejavu-core"

pg_host=127.0.0.1 pg_port=5432
if ! command -v pg_isready >/dev/null 2>&1; then
  need "PostgreSQL at $pg_host:$pg_port (database tests run on it too)" \
    "apt-get install -y postgresql && pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
elif ! pg_isready -h "$pg_host" -p "$pg_port" -q; then
  need "a running PostgreSQL at $pg_host:$pg_port (trust auth, database \`test\`)" \
    "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
fi

if [ "$missing" -ne 0 ]; then
  echo "make test: install or start the above, then run it again (.ci/run does all of it on Debian)." >&2
  exit 1
fi
echo "prerequisites: fluidsynth, soundfont, fonts, PostgreSQL at $pg_host:$pg_port - ok"
