#!/usr/bin/env bash
# Builds the edgeinfer .deb with cargo-deb and checks it the way a user's machine would see it:
# control fields (dpkg-deb -I), file list (dpkg-deb -c), maintainer scripts (sh -n), then unpacks
# it into a throwaway root and runs the installed edgeinferd on the installed config. In that root
# it also applies the packaged sysusers.d/tmpfiles.d files (the service user, the groups
# edgeinfer-clients and edgeinfer-admin, /etc/edgeinfer/credentials root:root 0700).
#
#   scripts/check-deb.sh            # package the debug build (what the test run just built)
#   scripts/check-deb.sh --release  # build and package the device profile's binaries (what you ship)
#   scripts/check-deb.sh --install  # also dpkg -i it for real, check the result, then purge it:
#                                   # as root, on a throwaway machine or container only
#
# The test run packages the debug build, stripped, so CI does not compile the workspace twice;
# cargo-deb warns that dev-profile packages are for testing only, which is what this one is.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "check-deb: installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (Debian package dpkg)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

release=0 install=0
for arg in "$@"; do
  case "$arg" in
    --release) release=1 ;;
    --install) install=1 ;;
    *) fail "unknown argument $arg (--release, --install)" ;;
  esac
done
if ((install)); then
  [ "$(id -u)" -eq 0 ] || fail "--install needs root (and a throwaway machine or container)"
  ! dpkg-query -W -f='${Status}' edgeinfer 2>/dev/null | grep -q 'installed' \
    || fail "--install: edgeinfer is already installed here; it would be upgraded, then purged"
fi

if ((release)); then
  cargo deb --locked -p edgeinfer-daemon --profile device -o "$work/"
else
  cargo build --locked -p edgeinfer-daemon --bins --quiet
  cargo deb -p edgeinfer-daemon --no-build --profile dev --strip --fast --quiet -o "$work/" 2>/dev/null
fi
deb=$(ls "$work"/edgeinfer_*.deb)
echo "check-deb: built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

# --- control fields ------------------------------------------------------------------------
dpkg-deb -I "$deb" >/dev/null || fail "dpkg-deb cannot read the package"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = edgeinfer ] || fail "Package is '$(field Package)'"
field Depends | grep -q 'libc6' || fail "Depends lacks libc6 (\$auto): $(field Depends)"
field Depends | grep -q 'adduser' || fail "Depends lacks adduser: $(field Depends)"
field Recommends | grep -q 'mosquitto' || fail "mosquitto must be recommended: $(field Recommends)"
field Depends | grep -q 'mosquitto' && fail "mosquitto must not be a hard dependency"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qx '/etc/edgeinfer/edgeinferd.toml' "$work/control/conffiles" \
  || fail "the config is not a conffile: $(cat "$work/control/conffiles" 2>/dev/null)"
for script in postinst postrm prerm; do
  [ -f "$work/control/$script" ] || fail "no $script in the package"
  sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst does not register the unit"
grep -q 'systemd-sysusers' "$work/control/postinst" || fail "postinst does not create the service user"
grep -q 'addgroup --system' "$work/control/postinst" \
  || fail "postinst does not create the groups where systemd-sysusers is missing (addgroup --system)"
for group in edgeinfer-clients edgeinfer-admin; do
  grep -q "$group" "$work/control/postinst" || fail "postinst does not create group $group"
done
grep -q 'chown root:edgeinfer .*/etc/edgeinfer/edgeinferd.toml' "$work/control/postinst" \
  && grep -q 'chmod 0640 /etc/edgeinfer/edgeinferd.toml' "$work/control/postinst" \
  || fail "postinst does not make the config root:edgeinfer 0640"
grep -q 'install -d -m 0700 -o root -g root /etc/edgeinfer/credentials' "$work/control/postinst" \
  || fail "postinst does not create /etc/edgeinfer/credentials root:root 0700"
grep -q 'usermod -aG edgeinfer\( \|$\)' "$work/control/postinst" "$work/control/postrm" \
  && fail "a maintainer script tells clients to join the service's group edgeinfer (edgeinfer-clients)"

# --- files ---------------------------------------------------------------------------------
listing=$(dpkg-deb -c "$deb")
for path in \
  ./usr/bin/edgeinferd ./usr/bin/edgeinfer \
  ./etc/edgeinfer/edgeinferd.toml \
  ./usr/share/dbus-1/system.d/org.edgeinfer.Daemon1.conf \
  ./usr/share/dbus-1/interfaces/org.edgeinfer.Daemon1.xml \
  ./usr/lib/sysusers.d/edgeinfer.conf ./usr/lib/tmpfiles.d/edgeinfer.conf \
  ./usr/share/doc/edgeinfer/copyright ./usr/share/doc/edgeinfer/dbus.md ./usr/share/doc/edgeinfer/mqtt.md \
  ./usr/share/doc/edgeinfer/edgeinferd-gpu.conf.example \
  ./usr/share/doc/edgeinfer/edgeinferd-credentials.conf.example \
  ./usr/share/bash-completion/completions/edgeinfer ./usr/share/zsh/vendor-completions/_edgeinfer \
  ./usr/share/fish/vendor_completions.d/edgeinfer.fish; do
  grep -q " $path\$" <<<"$listing" || fail "$path is not in the package"
done
for page in edgeinfer edgeinferd edgeinfer-segment edgeinfer-pull; do
  grep -Eq " \./usr/share/man/man1/$page\.1(\.gz)?\$" <<<"$listing" || fail "man page $page.1 is not in the package"
done
grep -Eq ' \./(usr/)?lib/systemd/system/edgeinferd\.service$' <<<"$listing" \
  || fail "edgeinferd.service is not in the package"
grep -E ' \./etc/edgeinfer/edgeinferd\.toml$' <<<"$listing" | grep -q '^-rw-r-----' \
  || fail "the config must not be world-readable (it may hold MQTT credentials)"

# --- unpack and run from the installed paths ------------------------------------------------
root="$work/root"
dpkg-deb -x "$deb" "$root"
cmp -s "$root/lib/systemd/system/edgeinferd.service" systemd/edgeinferd.service 2>/dev/null \
  || cmp -s "$root/usr/lib/systemd/system/edgeinferd.service" systemd/edgeinferd.service \
  || fail "the packaged unit differs from systemd/edgeinferd.service"
cmp -s "$root/usr/share/doc/edgeinfer/edgeinferd-credentials.conf.example" systemd/edgeinferd-credentials.conf.example \
  || fail "the packaged credentials drop-in example differs from systemd/edgeinferd-credentials.conf.example"
grep -q '^LoadCredential=mqtt-password:' "$root/usr/share/doc/edgeinfer/edgeinferd-credentials.conf.example" \
  || fail "the credentials drop-in example has no LoadCredential=mqtt-password:"
grep -q 'LoadCredential' "$root"/{usr/,}lib/systemd/system/edgeinferd.service 2>/dev/null \
  && fail "the unit must not load credentials itself (a missing source file fails it on systemd 252)"

# Users, groups and directories as the packaged sysusers.d/tmpfiles.d files make them, applied to
# the unpacked root (its etc/passwd and etc/group start empty).
sysusers=$root/usr/lib/sysusers.d/edgeinfer.conf tmpfiles=$root/usr/lib/tmpfiles.d/edgeinfer.conf
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers --root="$root" >/dev/null 2>&1 || fail "systemd-sysusers cannot apply $sysusers"
  in_root() { awk -F: -v n="$2" '$1 == n { found = 1 } END { exit !found }' "$root/etc/$1"; }
  in_root passwd edgeinfer || fail "the sysusers.d file does not create user edgeinfer"
  for group in edgeinfer edgeinfer-clients edgeinfer-admin; do
    in_root group "$group" || fail "the sysusers.d file does not create group $group"
  done
  awk -F: '$1 == "edgeinfer" && $4 != "" { exit 1 }' "$root/etc/group" \
    || fail "the sysusers.d file puts members in the service's group edgeinfer"
else
  for group in edgeinfer-clients edgeinfer-admin; do
    grep -Eq "^g[[:space:]]+$group[[:space:]]" "$sysusers" || fail "the sysusers.d file does not declare group $group"
  done
fi
awk '$1 == "d" && $2 == "/etc/edgeinfer/credentials" && $3 == "0700" && $4 == "root" && $5 == "root" { ok = 1 }
     END { exit !ok }' "$tmpfiles" || fail "the tmpfiles.d file does not make /etc/edgeinfer/credentials root:root 0700"
if [ "$(id -u)" -eq 0 ] && command -v systemd-tmpfiles >/dev/null && command -v systemd-sysusers >/dev/null; then
  systemd-tmpfiles --root="$root" --create "$tmpfiles" >/dev/null 2>&1 || fail "systemd-tmpfiles cannot apply $tmpfiles"
  [ "$(stat -c '%U:%G %a' "$root/etc/edgeinfer/credentials")" = "root:root 700" ] \
    || fail "/etc/edgeinfer/credentials is $(stat -c '%U:%G %a' "$root/etc/edgeinfer/credentials"), not root:root 700"
fi

config="$root/etc/edgeinfer/edgeinferd.toml"
# As installed, the config names no models (weights are not packaged; its examples are commented
# out): it validates, and says how to add one.
# The installed config names no node: the daemon takes the host name, and refuses one that
# devices share (localhost). Give the runs below a host name of its own where namespaces are
# allowed, so the result does not depend on this machine's name.
# (Called in a subshell: it execs, so a background call's pid is the daemon's.)
in_uts() {
  if unshare --uts true 2>/dev/null; then exec unshare --uts sh -c 'hostname deb-check && exec "$0" "$@"' "$@"; fi
  exec "$@"
}
out=$(in_uts "$root/usr/bin/edgeinferd" --config "$config" --check-config 2>&1) \
  || fail "installed edgeinferd rejects the installed config: $out"
grep -q "OK (node '[^']*'; 0 models: )" <<<"$out" || fail "unexpected --check-config output: $out"
grep -q "no models configured: add a \[\[models\]\] table" <<<"$out" || fail "--check-config does not say how to add a model: $out"
echo "check-deb: $(head -1 <<<"$out")"

# First boot: the installed daemon on the installed config reaches READY. The system bus is a
# private dbus-daemon with the system bus's default rules and the packaged policy (as root may own
# the name); no MQTT broker listens on the configured 127.0.0.1:1883 unless this machine runs one,
# which the daemon must survive (it retries in the background). sd_notify goes to a socket here.
if command -v dbus-daemon >/dev/null && command -v python3 >/dev/null && [ "$(id -u)" -eq 0 ]; then
  source scripts/private-bus.sh
  mkdir -p "$work/bus"
  start_private_system_bus "$work/bus" "$root/usr/share/dbus-1/system.d/org.edgeinfer.Daemon1.conf" \
    || fail "the private system bus did not start"
  bus_pid=$BUS_PID
  mkdir -p "$work/run"
  # READY=1 within a bounded time, read from the notify socket as systemd would.
  python3 - "$work/notify.sock" "$work/ready" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(90)
try:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        if "READY=1" in msg:
            open(sys.argv[2], "w").write(msg)
            break
except socket.timeout:
    pass
PY
  notify_pid=$!
  python3 -c 'import os, sys, time
deadline = time.monotonic() + 10
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline: time.sleep(0.02)' "$work/notify.sock"
  NOTIFY_SOCKET="$work/notify.sock" RUNTIME_DIRECTORY="$work/run" \
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" \
    in_uts "$root/usr/bin/edgeinferd" --config "$config" >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  wait "$notify_pid" || true
  kill -TERM "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null; daemon_rc=$?
  kill "$bus_pid" 2>/dev/null || true
  [ -s "$work/ready" ] || fail "the installed daemon on the installed config did not send READY=1 within 90 s: $(cat "$work/daemon.log")"
  grep -q "no models configured" "$work/daemon.log" || fail "the daemon does not say how to add a model: $(cat "$work/daemon.log")"
  [ "$daemon_rc" -eq 0 ] || fail "the daemon exited $daemon_rc on SIGTERM: $(cat "$work/daemon.log")"
  echo "check-deb: first boot on the installed config: $(tr '\n' ' ' <"$work/ready")"
else
  echo "check-deb: skipping the first-boot run (needs root, dbus-daemon and python3)"
fi

# A configured model whose folder is missing is a warning, not an invalid config; with the folders
# there (the bundled fixtures stand in) the examples, uncommented, validate.
models="$work/models"
mkdir "$models"
ln -s "$PWD/models/fixtures/sam" "$models/sam"
ln -s "$PWD/models/fixtures/dinov2" "$models/dinov2-small"
sed -e '/^# One \[\[models\]\] table per model\./,$ { /^# One /! s/^# // }' "$config" >"$work/edgeinferd.toml"
out=$(in_uts "$root/usr/bin/edgeinferd" --config "$work/edgeinferd.toml" --check-config 2>&1) \
  || fail "installed edgeinferd rejects the uncommented examples: $out"
grep -q "warning: model 'sam' will be failed: path /var/lib/edgeinfer/models/sam does not exist" <<<"$out" \
  || fail "a missing model folder is not reported as a warning: $out"
sed -i "s|/var/lib/edgeinfer/models/|$models/|" "$work/edgeinferd.toml"
ln -s "$PWD/models/fixtures/llama" "$models/smollm2-135m"
out=$(in_uts "$root/usr/bin/edgeinferd" --config "$work/edgeinferd.toml" --check-config 2>&1) \
  || fail "installed edgeinferd rejects the examples: $out"
grep -q "OK (node '[^']*'; 3 models: sam, dino, llm)" <<<"$out" || fail "unexpected --check-config output: $out"
grep -q "warning" <<<"$out" && fail "warnings with every folder in place: $out"
echo "check-deb: $out"
"$root/usr/bin/edgeinfer" --version >/dev/null || fail "installed edgeinfer does not run"

# --- --install: dpkg -i for real, check what the maintainer scripts did, purge -----------------
if ((install)); then
  dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
  getent passwd edgeinfer >/dev/null || fail "installed: no user edgeinfer"
  for group in edgeinfer edgeinfer-clients edgeinfer-admin; do
    getent group "$group" >/dev/null || fail "installed: no group $group"
  done
  mode() { stat -c '%U:%G %a' "$1"; }
  [ "$(mode /etc/edgeinfer/edgeinferd.toml)" = "root:edgeinfer 640" ] \
    || fail "installed: /etc/edgeinfer/edgeinferd.toml is $(mode /etc/edgeinfer/edgeinferd.toml), not root:edgeinfer 640"
  [ "$(mode /etc/edgeinfer/credentials)" = "root:root 700" ] \
    || fail "installed: /etc/edgeinfer/credentials is $(mode /etc/edgeinfer/credentials), not root:root 700"
  for example in edgeinferd-credentials.conf.example edgeinferd-gpu.conf.example; do
    [ -f "/usr/share/doc/edgeinfer/$example" ] || fail "installed: no /usr/share/doc/edgeinfer/$example"
  done
  dpkg --purge edgeinfer >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge failed"; }
  [ ! -e /etc/edgeinfer/credentials ] && [ ! -e /var/lib/edgeinfer ] \
    || fail "purged: /etc/edgeinfer/credentials or /var/lib/edgeinfer is left"
  echo "check-deb: installed: groups edgeinfer-clients and edgeinfer-admin, config root:edgeinfer 640," \
    "credentials root:root 700, examples in /usr/share/doc/edgeinfer; purged (the user and groups stay)"
fi
echo "check-deb: OK"
