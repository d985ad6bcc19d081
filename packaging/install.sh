#!/bin/sh
# Offline installer of Outpost, run from the unpacked outpost-VERSION-linux-MACHINE directory.
# Never uses the network. Installs the same files as the .deb:
#
#   /usr/bin/outpost
#   /usr/lib/systemd/system/outpost.service
#   /usr/lib/sysusers.d/outpost.conf     the system user outpost (systemd-sysusers)
#   /usr/lib/tmpfiles.d/outpost.conf     /var/lib/outpost, 0700, outpost's (systemd-tmpfiles)
#   /usr/share/doc/outpost/README.md
#
# Usage:
#   ./install.sh [--prefix DIR]                 install or reinstall (idempotent)
#   ./install.sh --uninstall [--prefix DIR]     remove the files and the unit; keep the data
#                                               dir /var/lib/outpost and the user
#   ./install.sh --uninstall --purge [--prefix DIR]
#                                               also delete /var/lib/outpost and the user
#
# --prefix DIR works on a system image mounted at DIR instead of this machine (the user goes
# into DIR/etc/passwd; nothing is started).
set -eu

prefix=""
action=install
purge=false
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --uninstall) action=uninstall; shift ;;
        --purge) purge=true; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if $purge && [ "$action" != uninstall ]; then
    echo "install.sh: --purge goes with --uninstall" >&2
    exit 2
fi
if [ -n "$prefix" ]; then
    [ -d "$prefix" ] || { echo "install.sh: --prefix $prefix is not a directory" >&2; exit 2; }
    prefix="$(cd "$prefix" && pwd)"
    [ "$prefix" = / ] && prefix=""
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it creates a system user and a root-owned service)" >&2
    exit 1
fi

here="$(cd "$(dirname "$0")" && pwd)"
bin="$prefix/usr/bin/outpost"
unit="$prefix/usr/lib/systemd/system/outpost.service"
sysusers="$prefix/usr/lib/sysusers.d/outpost.conf"
tmpfiles="$prefix/usr/lib/tmpfiles.d/outpost.conf"
doc="$prefix/usr/share/doc/outpost"
data="$prefix/var/lib/outpost"

# systemd acts only on this machine, and only when it is the running init.
live_systemd() {
    [ -z "$prefix" ] && [ -d /run/systemd/system ]
}

# The .deb owns these paths when it is installed; two owners would undo each other.
if [ -e "$prefix/var/lib/dpkg/info/outpost.list" ]; then
    echo "install.sh: the outpost .deb is installed here; use apt/dpkg to change it" >&2
    exit 1
fi

if [ "$action" = uninstall ]; then
    if live_systemd && [ -e "$unit" ]; then
        systemctl disable --now outpost.service
    fi
    rm -f "$bin" "$unit" "$sysusers" "$tmpfiles"
    rm -rf "$doc"
    if live_systemd; then
        systemctl daemon-reload
    fi
    if $purge; then
        rm -rf "$data"
        if grep -q '^outpost:' "$prefix/etc/passwd" 2>/dev/null; then
            userdel ${prefix:+--prefix "$prefix"} outpost
        fi
        if grep -q '^outpost:' "$prefix/etc/group" 2>/dev/null; then
            groupdel ${prefix:+--prefix "$prefix"} outpost
        fi
        echo "outpost uninstalled; its data dir and user are deleted"
    else
        echo "outpost uninstalled; kept ${data:-/var/lib/outpost} and the user outpost (--purge deletes them)"
    fi
    exit 0
fi

# Every file must be the one the release was made with, before anything is touched.
(cd "$here" && sha256sum --check --strict --quiet SHA256SUMS) || {
    echo "install.sh: files differ from SHA256SUMS; nothing installed" >&2
    exit 1
}
for tool in systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install.sh: $tool not found (Outpost runs as a systemd service)" >&2
        exit 1
    }
done

# Each file is written beside its place and renamed in, so a reinstall over a running node
# never leaves a half-written binary.
place() { # MODE SRC DEST
    mkdir -p "$(dirname "$3")"
    install -m "$1" "$2" "$3.new"
    mv -f "$3.new" "$3"
}
place 0755 "$here/outpost" "$bin"
place 0644 "$here/outpost.service" "$unit"
place 0644 "$here/outpost-sysusers.conf" "$sysusers"
place 0644 "$here/outpost-tmpfiles.conf" "$tmpfiles"
place 0644 "$here/README.md" "$doc/README.md"

# The user first, then the data dir it owns; both tools leave what is already right alone.
mkdir -p "$prefix/etc"
systemd-sysusers ${prefix:+--root="$prefix"} outpost.conf
systemd-tmpfiles --create ${prefix:+--root="$prefix"} outpost.conf

if live_systemd; then
    systemctl daemon-reload
    systemctl enable outpost.service
    # A reinstall (a new version) restarts a running node; a node not made yet stays down.
    systemctl try-restart outpost.service
fi
echo "outpost $("$bin" --version | awk '{print $2}') installed to ${prefix:-/}"
if [ ! -e "$data/node.toml" ]; then
    echo "next: make this node with 'runuser -u outpost -- outpost init ...' or '... join ...' (README), then 'systemctl start outpost'"
fi
