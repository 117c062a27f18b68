#!/usr/bin/env bash
# Builds the edgeinfer .deb with cargo-deb and checks it the way a user's machine would see it:
# control fields (dpkg-deb -I), file list (dpkg-deb -c), maintainer scripts (sh -n), then unpacks
# it into a throwaway root and runs the installed edgeinferd on the installed config.
#
#   scripts/check-deb.sh            # package the debug build (what the test run just built)
#   scripts/check-deb.sh --release  # build and package release binaries (what you ship)
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

if [ "${1:-}" = "--release" ]; then
  cargo deb --locked -p edgeinfer-daemon -o "$work/"
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

# --- files ---------------------------------------------------------------------------------
listing=$(dpkg-deb -c "$deb")
for path in \
  ./usr/bin/edgeinferd ./usr/bin/edgeinfer \
  ./etc/edgeinfer/edgeinferd.toml \
  ./usr/share/dbus-1/system.d/org.edgeinfer.Daemon1.conf \
  ./usr/share/dbus-1/interfaces/org.edgeinfer.Daemon1.xml \
  ./usr/lib/sysusers.d/edgeinfer.conf ./usr/lib/tmpfiles.d/edgeinfer.conf \
  ./usr/share/doc/edgeinfer/copyright ./usr/share/doc/edgeinfer/dbus.md ./usr/share/doc/edgeinfer/mqtt.md; do
  grep -q " $path\$" <<<"$listing" || fail "$path is not in the package"
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
config="$root/etc/edgeinfer/edgeinferd.toml"
# As installed, the config names model folders under /var/lib/edgeinfer/models that the user puts
# there (weights are not packaged): everything else must validate, and the missing folder must be
# the reason given.
if err=$("$root/usr/bin/edgeinferd" --config "$config" --check-config 2>&1); then
  fail "the installed config validated although /var/lib/edgeinfer/models is empty: $err"
fi
grep -q "path /var/lib/edgeinfer/models/.* does not exist" <<<"$err" \
  || fail "installed edgeinferd rejects the installed config for another reason: $err"
# With models at those paths (the bundled fixtures stand in), the installed config is accepted.
models="$work/models"
mkdir "$models"
ln -s "$PWD/models/fixtures/sam" "$models/sam"
ln -s "$PWD/models/fixtures/dinov2" "$models/dinov2-small"
ln -s "$PWD/models/fixtures/llama" "$models/smollm2-135m"
sed "s|/var/lib/edgeinfer/models/|$models/|" "$config" >"$work/edgeinferd.toml"
# The installed config names no node: the daemon takes the host name, and refuses one that
# devices share (localhost). Give the check a host name of its own where namespaces are allowed,
# so the result does not depend on this machine's name.
check=("$root/usr/bin/edgeinferd" --config "$work/edgeinferd.toml" --check-config)
if unshare --uts true 2>/dev/null; then
  out=$(unshare --uts sh -c 'hostname deb-check && exec "$0" "$@"' "${check[@]}" 2>&1) \
    || fail "installed edgeinferd rejects the installed config: $out"
  grep -q "OK (node 'deb-check'; 3 models: sam, dino, llm)" <<<"$out" || fail "unexpected --check-config output: $out"
else
  out=$("${check[@]}" 2>&1) || fail "installed edgeinferd rejects the installed config: $out"
  grep -q "OK (node '[^']*'; 3 models: sam, dino, llm)" <<<"$out" || fail "unexpected --check-config output: $out"
fi
echo "check-deb: $out"
"$root/usr/bin/edgeinfer" --version >/dev/null || fail "installed edgeinfer does not run"
echo "check-deb: OK"
