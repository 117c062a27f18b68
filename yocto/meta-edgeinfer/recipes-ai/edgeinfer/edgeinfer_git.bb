SUMMARY = "On-device inference daemon for SAM, DINOv2 and small LLaMA models"
DESCRIPTION = "edgeinferd runs ONNX exports of SAM, DINOv2 and LLaMA-family models on the CPU \
               (tract, pure Rust) or through ONNX Runtime execution providers, and serves them \
               over D-Bus and MQTT. The edgeinfer tool checks models against the device's \
               providers and talks to the daemon."
# nooelint: oelint.vars.homepageping - the check needs internet access, which CI does not have
HOMEPAGE = "https://github.com/edgeinfer/edgeinfer"
BUGTRACKER = "https://github.com/edgeinfer/edgeinfer/issues"
SECTION = "devel"
# edgeinfer's own code, and the crates linked into the binaries (edgeinfer-licenses.inc,
# generated from Cargo.lock by scripts/yocto-crates.py; their texts are in the crate sources).
require edgeinfer-licenses.inc
LICENSE = "Apache-2.0 & ${EDGEINFER_CRATE_LICENSES}"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# The layer lives in the source repository: build the same revision as the layer checkout by
# pinning SRCREV to it (SRCREV:pn-edgeinfer = "<git rev-parse HEAD>" in local.conf or a
# distro include); the crate list below is generated from that revision's Cargo.lock.
PV = "0.1.0+git"
SRC_URI = "git://github.com/edgeinfer/edgeinfer.git;protocol=https;branch=main"
# nooelint: oelint.vars.autorev - the recipe ships inside the repository it builds (CI checks its crate list against that Cargo.lock); builds pin SRCREV as above
SRCREV ?= "${AUTOREV}"
CVE_PRODUCT = "edgeinfer"
# Where the git fetcher unpacks: ${WORKDIR}/git on scarthgap, ${UNPACKDIR}/<destsuffix> since.
S = "${@(d.getVar('UNPACKDIR') + '/' + (d.getVar('BB_GIT_DEFAULT_DESTSUFFIX') or 'git')) if d.getVar('UNPACKDIR') else d.getVar('WORKDIR') + '/git'}"

require edgeinfer-crates.inc

inherit bash-completion cargo cargo-update-recipe-crates systemd useradd

# Workspace: build only the daemon crate (edgeinferd + edgeinfer), with the backends and
# execution providers PACKAGECONFIG selects. The default is the pure-Rust tract backend alone,
# which needs nothing at run time. ONNX Runtime is opt-in (PACKAGECONFIG:append:pn-edgeinfer =
# " ort xnnpack"): the library is loaded at run time, never linked, so it is a recommendation
# (RRECOMMENDS) that a layer providing `onnxruntime` satisfies (README: which layers do).
PACKAGECONFIG ??= ""
PACKAGECONFIG[ort] = ",,,,onnxruntime"
PACKAGECONFIG[ort-legacy] = ",,,,onnxruntime"
PACKAGECONFIG[cuda] = ",,,,onnxruntime"
PACKAGECONFIG[tensorrt] = ",,,,onnxruntime"
PACKAGECONFIG[openvino] = ",,,,onnxruntime"
PACKAGECONFIG[qnn] = ",,,,onnxruntime"
PACKAGECONFIG[rknpu] = ",,,,onnxruntime"
PACKAGECONFIG[vsinpu] = ",,,,onnxruntime"
PACKAGECONFIG[xnnpack] = ",,,,onnxruntime"
PACKAGECONFIG[acl] = ",,,,onnxruntime"
PACKAGECONFIG[armnn] = ",,,,onnxruntime"

def edgeinfer_features(d):
    config = (d.getVar('PACKAGECONFIG') or '').split()
    features = ['tract']
    if 'ort-legacy' in config:
        features.append('ort-legacy')
    elif 'ort' in config:
        features.append('ort')
    for ep in ['cuda', 'tensorrt', 'openvino', 'qnn', 'rknpu', 'vsinpu', 'xnnpack', 'acl', 'armnn']:
        if ep in config:
            features.append('ep-' + ep)
    return ','.join(features)

# The workspace's device profile (fat LTO, one codegen unit: the smaller binary the .deb ships).
# OE strips and splits debug info itself, and an already-stripped binary is a QA error, so the
# profile's own strip is turned off here.
BUILD_MODE = "--profile device"
BUILD_DIR = "device"
export CARGO_PROFILE_DEVICE_STRIP = "false"

# nooelint: oelint.vars.mispell - EXTRA_CARGO_FLAGS is defined by OE-core's cargo.bbclass
EXTRA_CARGO_FLAGS = "-p edgeinfer-daemon --no-default-features --features ${@edgeinfer_features(d)}"

# The service user and group edgeinfer (the service only: it reads the config and secrets); the
# groups of D-Bus clients (inference) and admins (model load/unload, gallery changes), as in
# systemd/edgeinfer.sysusers.conf. Add users to them in an image with EXTRA_USERS_PARAMS, e.g.
# "usermod -aG edgeinfer-clients <app-user>;".
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system edgeinfer-clients; --system edgeinfer-admin"
USERADD_PARAM:${PN} = "--system --home ${localstatedir}/lib/edgeinfer --no-create-home --shell /sbin/nologin --user-group edgeinfer"

SYSTEMD_SERVICE:${PN} = "edgeinferd.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/edgeinferd.service ${D}${systemd_system_unitdir}/edgeinferd.service
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/edgeinfer.tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/edgeinfer.conf
    # The config may hold MQTT credentials: root and the service only (the folder too, so the
    # service user can reach the config: ConfigurationDirectoryMode=0750).
    install -d -m 0750 ${D}${sysconfdir}/edgeinfer
    chown root:edgeinfer ${D}${sysconfdir}/edgeinfer
    install -m 0640 ${S}/daemon/edgeinferd.example.toml ${D}${sysconfdir}/edgeinfer/edgeinferd.toml
    chown root:edgeinfer ${D}${sysconfdir}/edgeinfer/edgeinferd.toml
    # Sources of systemd credentials (edgeinferd-credentials.conf.example): root only.
    install -d -m 0700 ${D}${sysconfdir}/edgeinfer/credentials
    install -d ${D}${datadir}/dbus-1/system.d ${D}${datadir}/dbus-1/interfaces
    install -m 0644 ${S}/daemon/dbus/org.edgeinfer.Daemon1.conf ${D}${datadir}/dbus-1/system.d/
    install -m 0644 ${S}/daemon/dbus/org.edgeinfer.Daemon1.xml ${D}${datadir}/dbus-1/interfaces/
    # Shell completions and man pages (scripts/cli-assets.sh generates them from the CLI; the
    # cross-built binary cannot run here): bash-completion class / ${PN}-doc / ${PN}.
    install -d ${D}${datadir}/bash-completion/completions ${D}${datadir}/zsh/site-functions \
               ${D}${datadir}/fish/vendor_completions.d ${D}${mandir}/man1
    install -m 0644 ${S}/daemon/assets/completions/edgeinfer.bash ${D}${datadir}/bash-completion/completions/edgeinfer
    install -m 0644 ${S}/daemon/assets/completions/_edgeinfer ${D}${datadir}/zsh/site-functions/
    install -m 0644 ${S}/daemon/assets/completions/edgeinfer.fish ${D}${datadir}/fish/vendor_completions.d/
    cp -R --no-preserve=ownership ${S}/daemon/assets/man/. ${D}${mandir}/man1/
    # Drop-in examples (MQTT secrets as systemd credentials; GPU/NPU device access): ${PN}-doc.
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/systemd/edgeinferd-credentials.conf.example ${D}${docdir}/${BPN}/
    install -m 0644 ${S}/systemd/edgeinferd-gpu.conf.example ${D}${docdir}/${BPN}/
}

CONFFILES:${PN} = "${sysconfdir}/edgeinfer/edgeinferd.toml"
FILES:${PN} += "${datadir}/dbus-1 ${nonarch_libdir}/tmpfiles.d ${datadir}/zsh ${datadir}/fish"
RDEPENDS:${PN} += "dbus"
RRECOMMENDS:${PN} += "mosquitto"

# A daemon for the target image; nothing needs a native or SDK build of it.
BBCLASSEXTEND = ""
