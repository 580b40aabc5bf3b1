#!/usr/bin/env bash
# Install (or upgrade) streamd as a systemd service. Run as root from a checkout:
#
#   sudo tools/install.sh                      # venv in /opt/streamd, unit, user, config, credentials
#   sudo tools/install.sh --extras dlib,onnx   # the engines to install (default: dlib,onnx)
#   tools/install.sh --dry-run                 # print what would be done, change nothing
#   tools/install.sh --destdir /tmp/root --skip-venv   # stage into a root directory (packaging, tests)
#
# What it does, each step safe to repeat (re-running an install changes nothing but the package):
#   1. a virtual environment PREFIX/venv with streamd and the chosen extras (pip, from this checkout);
#   2. the system user streamd (sysusers.d) and its directories (tmpfiles.d);
#   3. /etc/systemd/system/streamd.service, its ExecStart pointing into PREFIX;
#   4. /etc/streamd/streamd.yaml from configs/streamd.yaml, only if absent or never edited since the
#      last install; an edited config is never overwritten: the new default goes to streamd.yaml.new;
#   5. /etc/streamd/credentials/ (root only) with empty mqtt_password and http_token files, which the
#      unit's LoadCredential= lines need to exist; write the secrets into them;
#   6. systemctl daemon-reload (when systemd runs and no --destdir is given). It never enables or
#      starts the service: run `systemctl enable --now streamd` once the config is edited.
set -euo pipefail

PREFIX=/opt/streamd
DESTDIR=""
EXTRAS="dlib,onnx"
DRY_RUN=0
SKIP_VENV=0
PYTHON=${PYTHON:-python3}
SRC="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

Options:
  --prefix DIR     where the venv and shared files go (default $PREFIX)
  --destdir DIR    install below DIR instead of / (no users created, no chown, no daemon-reload)
  --extras LIST    pip extras of streamd to install (default $EXTRAS; e.g. dlib,onnx,paddle)
  --python EXE     Python 3.11+ used to create the venv (default \$PYTHON or python3)
  --skip-venv      do not create or update the venv (files and unit only)
  --dry-run        print the actions, change nothing
  -h, --help       this help
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --destdir) DESTDIR="${2:?--destdir needs a directory}"; shift 2 ;;
    --extras) EXTRAS="${2?--extras needs a list}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an executable}"; shift 2 ;;
    --skip-venv) SKIP_VENV=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be an absolute path, got $PREFIX" >&2; exit 2 ;; esac
if [ -n "$DESTDIR" ]; then DESTDIR="$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)"; fi
if [ "$DRY_RUN" = 0 ] && [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or use --dry-run, or --destdir DIR to stage files)" >&2
  exit 1
fi

ETC="$DESTDIR/etc"
CONF_DIR="$ETC/streamd"
SHARE="$DESTDIR$PREFIX/share"

# run CMD...: do it, or print it with --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

say() { echo "install.sh: $*"; }

# put SRC DEST MODE: install a file we own (replaced on upgrade) unless it is already identical.
put() {
  local src="$1" dest="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    return 0
  fi
  say "installing $dest"
  run install -D -m "$mode" "$src" "$dest"
}

# owner USER:GROUP PATH: chown on a real install only (a staged root has no such user here).
owner() {
  if [ -z "$DESTDIR" ]; then run chown "$1" "$2"; fi
}

# ---- 1. the virtual environment
if [ "$SKIP_VENV" = 0 ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: $PYTHON is not Python 3.11 or newer (use --python)" >&2
    exit 1
  fi
  VENV="$DESTDIR$PREFIX/venv"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    run "$PYTHON" -m venv "$VENV"
  fi
  spec="$SRC"
  [ -n "$EXTRAS" ] && spec="$SRC[$EXTRAS]"
  say "installing streamd ($spec) into $VENV"
  run "$VENV/bin/python" -m pip install --quiet --upgrade pip
  run "$VENV/bin/python" -m pip install --quiet --upgrade "$spec"
fi

# ---- 2. user and directories
put "$SRC/systemd/streamd.sysusers" "$ETC/sysusers.d/streamd.conf" 0644
put "$SRC/systemd/streamd.tmpfiles" "$ETC/tmpfiles.d/streamd.conf" 0644
if [ -n "$DESTDIR" ]; then
  run systemd-sysusers --root="$DESTDIR" "$ETC/sysusers.d/streamd.conf"
  # Staged: create the directories without owners (the host has no streamd user to chown to).
  grep -E '^d ' "$SRC/systemd/streamd.tmpfiles" | while read -r _ path mode _; do
    run install -d -m "$mode" "$DESTDIR$path"
  done
else
  run systemd-sysusers /etc/sysusers.d/streamd.conf
  run systemd-tmpfiles --create /etc/tmpfiles.d/streamd.conf
fi

# ---- 3. the unit (ExecStart follows --prefix) and shared files
unit_tmp="$(mktemp)"
trap 'rm -f "$unit_tmp"' EXIT
sed -e "s#/opt/streamd/#$PREFIX/#g" "$SRC/systemd/streamd.service" > "$unit_tmp"
put "$unit_tmp" "$ETC/systemd/system/streamd.service" 0644
put "$SRC/docs/operations.md" "$SHARE/docs/operations.md" 0644
put "$SRC/systemd/streamd.service.d/paddle.conf" "$SHARE/systemd/streamd.service.d/paddle.conf" 0644
put "$SRC/configs/streamd.yaml" "$SHARE/streamd.yaml.example" 0644

# ---- 4. the config: a conffile, like dpkg's. The last default we installed is kept beside the
# example; a config still equal to it was never edited and may be replaced by the new default.
CONFIG="$CONF_DIR/streamd.yaml"
LAST_DEFAULT="$SHARE/streamd.yaml.installed"
NEW_DEFAULT="$SRC/configs/streamd.yaml"
if [ ! -e "$CONFIG" ]; then
  say "installing the default config $CONFIG (edit it: cameras, mqtt)"
  run install -D -m 0640 "$NEW_DEFAULT" "$CONFIG"
  owner root:streamd "$CONFIG"
elif cmp -s "$CONFIG" "$NEW_DEFAULT"; then
  :  # already the current default
elif [ -f "$LAST_DEFAULT" ] && cmp -s "$CONFIG" "$LAST_DEFAULT"; then
  say "updating the unedited config $CONFIG to the new default"
  run install -m 0640 "$NEW_DEFAULT" "$CONFIG"
  owner root:streamd "$CONFIG"
else
  if [ ! -f "$CONFIG.new" ] || ! cmp -s "$CONFIG.new" "$NEW_DEFAULT"; then
    say "$CONFIG was edited: kept; the new default is in $CONFIG.new (compare with: diff $CONFIG $CONFIG.new)"
    run install -m 0640 "$NEW_DEFAULT" "$CONFIG.new"
    owner root:streamd "$CONFIG.new"
  fi
fi
put "$NEW_DEFAULT" "$LAST_DEFAULT" 0644

# ---- 5. credentials: root-only files the unit loads with LoadCredential= (systemd copies them to
# /run/credentials/streamd.service/, readable by the service alone).
run install -d -m 0700 "$CONF_DIR/credentials"
for name in mqtt_password http_token; do
  if [ ! -e "$CONF_DIR/credentials/$name" ]; then
    say "creating the empty credential $CONF_DIR/credentials/$name"
    run install -m 0600 /dev/null "$CONF_DIR/credentials/$name"
  fi
done

# ---- 6. tell systemd
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
  say "done. Edit $CONFIG, then: systemctl enable --now streamd; journalctl -u streamd -f"
else
  say "done (systemd not running here, or staged into ${DESTDIR:-/}: no daemon-reload)"
fi
