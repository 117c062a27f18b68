#!/usr/bin/env bash
# Checks meta-edgeinfer without bitbake (a full image build is beyond CI machines): layer
# structure, the crate list against Cargo.lock, the license checksum, that every file the recipe
# installs exists in the repository, that every PACKAGECONFIG maps to a real cargo feature, that
# the useradd parameters create the user and groups systemd/edgeinfer.sysusers.conf declares
# (edgeinfer, edgeinfer-clients, edgeinfer-admin), that the credentials drop-in example and the
# root-only credentials folder are installed, and oelint-adv (default rule set) over the recipes.
#
#   yocto/check-layer.sh [path/to/oelint-adv]
set -euo pipefail
cd "$(dirname "$0")/.."
layer=yocto/meta-edgeinfer
recipe=$layer/recipes-ai/edgeinfer/edgeinfer_git.bb
oelint=${1:-oelint-adv}
fail() { echo "error: $*" >&2; exit 1; }

for var in BBFILE_COLLECTIONS BBFILE_PATTERN_edgeinfer LAYERSERIES_COMPAT_edgeinfer LAYERDEPENDS_edgeinfer LAYERVERSION_edgeinfer; do
  grep -q "^$var" "$layer/conf/layer.conf" || fail "$layer/conf/layer.conf does not set $var"
done
grep -q 'LAYERSERIES_COMPAT_edgeinfer = ".*scarthgap' "$layer/conf/layer.conf" || fail "layer not marked compatible with scarthgap"
for append in $(find "$layer" -name '*.bbappend'); do
  base=$(basename "$append" .bbappend); base=${base%%_*}
  ls "$layer"/recipes-*/*/"${base}"_*.bb >/dev/null 2>&1 || fail "$append appends to no recipe of this layer"
done

python3 scripts/yocto-crates.py --check

grep -q '^require edgeinfer-licenses.inc$' "$recipe" || fail "the recipe does not require edgeinfer-licenses.inc"
grep -q '^LICENSE = "Apache-2.0 & ${EDGEINFER_CRATE_LICENSES}"$' "$recipe" \
  || fail "the recipe's LICENSE does not cover the linked crates (EDGEINFER_CRATE_LICENSES)"

# The default build must not depend on anything OE-core does not provide: the default
# PACKAGECONFIG's build and run-time dependencies (fields 3 and 4) are empty, and nothing else in
# the recipe depends on ONNX Runtime (it may only be recommended).
default=$(sed -n 's/^PACKAGECONFIG ??= "\(.*\)"$/\1/p' "$recipe")
for item in $default; do
  deps=$(sed -n "s/^PACKAGECONFIG\[$item\] = \"\([^,]*\),\([^,]*\),\([^,]*\),\([^,]*\).*\"/\3\4/p" "$recipe")
  [ -z "$deps" ] || fail "default PACKAGECONFIG '$item' depends on '$deps', which OE-core does not provide"
  grep -q "^PACKAGECONFIG\[$item\] = .*onnxruntime" "$recipe" \
    && fail "default PACKAGECONFIG '$item' wants ONNX Runtime: the default is tract only (ONNX Runtime opt-in)"
done
for item in $(sed -n 's/^PACKAGECONFIG\[\([a-z-]*\)\].*/\1/p' "$recipe"); do
  fields=$(sed -n "s/^PACKAGECONFIG\[$item\] = \"\(.*\)\"/\1/p" "$recipe")
  [ "$(cut -d, -f3,4 <<<"$fields")" = "," ] \
    || fail "PACKAGECONFIG[$item] = \"$fields\" makes onnxruntime a hard dependency; recommend it (field 5)"
done
grep -Eq '^(R?DEPENDS).*onnxruntime' "$recipe" && fail "the recipe depends on onnxruntime outside PACKAGECONFIG"

md5=$(sed -n 's/.*file:\/\/LICENSE;md5=\([0-9a-f]*\).*/\1/p' "$recipe")
[ "$md5" = "$(md5sum LICENSE | cut -d' ' -f1)" ] || fail "LIC_FILES_CHKSUM ($md5) does not match LICENSE"

n=0
for f in $(grep -o '\${S}/[^ ]*' "$recipe" | sed 's#^\${S}/##' | sort -u); do
  [ -e "$f" ] || fail "the recipe installs $f, which is not in the repository"
  n=$((n + 1))
done

for ep in $(sed -n "s/.*for ep in \[\(.*\)\]:.*/\1/p" "$recipe" | tr -d "',"); do
  grep -q "^ep-$ep = " daemon/Cargo.toml || fail "PACKAGECONFIG $ep maps to cargo feature ep-$ep, which daemon/Cargo.toml lacks"
  grep -q "^PACKAGECONFIG\[$ep\]" "$recipe" || fail "no PACKAGECONFIG[$ep] for execution provider $ep"
done

# Users and groups: the useradd class must create what the sysusers.d file declares (the .deb
# applies that file), and at least the service user and the client and admin groups.
sysusers=systemd/edgeinfer.sysusers.conf
param() { sed -n 's/^'"$1"':${PN} = "\(.*\)"$/\1/p' "$recipe" | tr ';' '\n'; }
grep -q '^USERADD_PACKAGES = "${PN}"' "$recipe" || fail "USERADD_PACKAGES is not \${PN}"
users=$(param USERADD_PARAM) groups=$(param GROUPADD_PARAM)
for user in edgeinfer $(awk '$1 == "u" { print $2 }' "$sysusers"); do
  grep -Eq -- "^ *--system .*--user-group $user *\$" <<<"$users" \
    || fail "USERADD_PARAM:\${PN} does not create the system user $user with its group"
done
for group in edgeinfer-clients edgeinfer-admin $(awk '$1 == "g" { print $2 }' "$sysusers"); do
  grep -Eq -- "^ *--system +$group *\$" <<<"$groups" \
    || fail "GROUPADD_PARAM:\${PN} does not create the system group $group (declared in $sysusers)"
done
group_names=$(sed -E 's/^ *--system +//; s/ *$//' <<<"$groups" | tr '\n' ' ')
for group in $group_names; do
  awk -v g="$group" '$1 == "g" && $2 == g { found = 1 } END { exit !found }' "$sysusers" \
    || fail "GROUPADD_PARAM:\${PN} creates group $group, which $sysusers does not declare"
done
grep -q 'install -m 0644 ${S}/systemd/edgeinferd-credentials.conf.example ${D}${docdir}/' "$recipe" \
  || fail "the recipe does not install the credentials drop-in example into \${docdir} (\${PN}-doc)"
grep -q 'install -d -m 0700 ${D}${sysconfdir}/edgeinfer/credentials$' "$recipe" \
  || fail "the recipe does not install /etc/edgeinfer/credentials as 0700"

out=$("$oelint" --quiet "$recipe" $(find "$layer" -name '*.bbappend') 2>&1) || true
[ -z "$out" ] || { echo "$out" >&2; fail "oelint-adv is not clean"; }
echo "meta-edgeinfer: layer.conf ok, crates and their licenses in step with Cargo.lock, default PACKAGECONFIG '${default}' needs nothing beyond OE-core, license ok, $n installed files present, PACKAGECONFIG ok, user and groups (edgeinfer + ${group_names% }) ok, oelint-adv clean"
