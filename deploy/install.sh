#!/bin/sh
# Install the edge origin and/or node as systemd services under their own users. Idempotent: a
# second run changes nothing but modes and owners that drifted; it never overwrites a token,
# node.env or an installed unit that differs (it says so; --force-units replaces units).
#
# usage: deploy/install.sh [--root DIR] [--artifact FILE [--sha256sums FILE]] [--force-units]
#                          [--token-stdin] origin|node...
#   --artifact FILE   the single-file edge for this machine (`make dist`: dist/edge-x86_64.pyz or
#                     dist/edge-aarch64.pyz), checked against the SHA256SUMS beside it (or
#                     --sha256sums FILE), installed as /usr/local/lib/edge/edge.pyz, unpacked for
#                     /usr/bin/python3 (3.13) and run by the wrapper /usr/local/bin/edge
#   --root DIR        install into DIR (a staging tree or a test) instead of /: users go to
#                     DIR/etc/passwd (useradd --prefix), --artifact runs DIR's python3 (chroot),
#                     nothing is reloaded
#   --token-stdin     node: read the node token from standard input into /etc/edge/node-token
#                     (never give a token as an argument: `ps` shows arguments)
# The units run /usr/local/bin/edge. Without --artifact, a venv's edge
# (/opt/edge/.venv/bin/edge) is linked there when nothing else is.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
force_units=0
token_stdin=0
roles=""
artifact=""
sums=""
lib=/usr/local/lib/edge

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=${2%/}; shift 2 ;;
        --root=*) root=${1#--root=}; root=${root%/}; shift ;;
        --force-units) force_units=1; shift ;;
        --token-stdin) token_stdin=1; shift ;;
        --artifact) [ $# -ge 2 ] || die "--artifact needs a file (dist/edge-$(uname -m).pyz)"; artifact=$2; shift 2 ;;
        --artifact=*) artifact=${1#--artifact=}; shift ;;
        --sha256sums) [ $# -ge 2 ] || die "--sha256sums needs a file"; sums=$2; shift 2 ;;
        --sha256sums=*) sums=${1#--sha256sums=}; shift ;;
        origin|node) roles="$roles $1"; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1': expected origin, node, --root DIR, --artifact FILE, --sha256sums FILE, --force-units or --token-stdin" ;;
    esac
done
[ -n "$roles" ] || die "say what to install: origin, node or both (e.g. deploy/install.sh node)"
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root: not a directory"
fi
[ "$(id -u)" = 0 ] || die "run as root (it creates users and root-owned directories), or with sudo"
case " $roles " in *" node "*) ;; *) [ "$token_stdin" = 0 ] || die "--token-stdin is for the node" ;; esac
[ -z "$sums" ] || [ -n "$artifact" ] || die "--sha256sums goes with --artifact FILE"

# Runs the target's python3: this machine's, or --root's through chroot.
target_python() {
    if [ -n "$root" ]; then chroot "$root" /usr/bin/python3 "$@"; else /usr/bin/python3 "$@"; fi
}

# Checks the artifact before anything is changed: its checksum, its architecture, the python3 it needs.
check_artifact() {
    [ -f "$artifact" ] || die "--artifact $artifact: no such file (make dist writes dist/edge-$(uname -m).pyz)"
    sums=${sums:-$(dirname "$artifact")/SHA256SUMS}
    [ -f "$sums" ] || die "--artifact $artifact: no checksum file $sums (make dist writes it beside the artifacts; or give --sha256sums FILE)"
    name=$(basename "$artifact")
    expected=$(awk -v name="$name" '$2 == name || $2 == "*" name { print $1; exit }' "$sums")
    [ -n "$expected" ] || die "--artifact $artifact: $sums has no line for $name"
    actual=$(sha256sum < "$artifact" | cut -d ' ' -f 1)
    [ "$actual" = "$expected" ] || die "--artifact $artifact: sha256 $actual does not match $expected in $sums: the file is damaged or not the one built; copy it again"
    machine=$(uname -m)
    case "$name" in
        edge-*.pyz) arch=${name#edge-}; arch=${arch%.pyz}
            [ "$arch" = "$machine" ] || die "--artifact $artifact is built for $arch, this machine is $machine: use edge-$machine.pyz" ;;
    esac
    [ -x "$root/usr/bin/python3" ] || die "--artifact needs Python 3.13 at $root/usr/bin/python3 (Debian 13: apt-get install python3)"
    version=$(target_python -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "--artifact: $root/usr/bin/python3 does not run"
    [ "$version" = 3.13 ] || die "--artifact: $root/usr/bin/python3 is Python $version; the artifact holds wheels for CPython 3.13 (Debian 13 trixie's python3)"
}

# The artifact at $lib/edge.pyz, unpacked under $lib/site by root (the services may not write
# there: ProtectSystem=strict), and the wrapper the units run.
install_artifact() {
    ensure_dir /usr/local/lib 0755 0 0
    ensure_dir "$lib" 0755 0 0
    ensure_dir "$lib/site" 0755 0 0
    if ! cmp -s "$artifact" "$root$lib/edge.pyz"; then
        cp "$artifact" "$root$lib/edge.pyz.tmp" && chmod 0644 "$root$lib/edge.pyz.tmp" && mv "$root$lib/edge.pyz.tmp" "$root$lib/edge.pyz"
        say "installed $root$lib/edge.pyz from $artifact"
    fi
    chown 0:0 "$root$lib/edge.pyz"
    chmod 0644 "$root$lib/edge.pyz"
    # The first run unpacks it (shiv, into $SHIV_ROOT) and compiles it for this python3.
    installed=$(umask 022; SHIV_ROOT="$lib/site"; export SHIV_ROOT; target_python "$lib/edge.pyz" --version) \
        || die "--artifact $artifact does not run with $root/usr/bin/python3 (see above)"
    build=$(target_python -c 'import json, sys, zipfile; print(json.loads(zipfile.ZipFile(sys.argv[1]).read("environment.json"))["build_id"])' "$lib/edge.pyz")
    # Older builds' trees (a running service still uses its own until it restarts).
    for old in "$root$lib/site/"edge.pyz_*; do
        case "$old" in *"_$build"|*"*"*) ;; *)
            rm -rf "$old" "$(dirname "$old")/.$(basename "$old")_lock"
            say "removed $old, an older build: restart the services that run it" ;;
        esac
    done
    mkdir -p "$root/usr/local/bin"
    wrapper="$root/usr/local/bin/edge"
    printf '%s\n' '#!/bin/sh' \
        "# Written by deploy/install.sh: the edge command from $lib/edge.pyz, run by the" \
        "# distribution's Python 3.13, with its packages as unpacked at install time." \
        "SHIV_ROOT=$lib/site" 'export SHIV_ROOT' "exec /usr/bin/python3 $lib/edge.pyz \"\$@\"" > "$wrapper.tmp"
    chmod 0755 "$wrapper.tmp"
    if ! cmp -s "$wrapper.tmp" "$wrapper"; then
        [ ! -e "$wrapper" ] && [ ! -L "$wrapper" ] || say "replaced $wrapper"
        mv "$wrapper.tmp" "$wrapper"
    else
        rm -f "$wrapper.tmp"
    fi
    say "$installed: run as $wrapper"
}

# Without --artifact: the units' /usr/local/bin/edge is a venv's, when there is one.
link_venv() {
    if [ -e "$root/usr/local/bin/edge" ] || [ -L "$root/usr/local/bin/edge" ]; then
        return
    fi
    if [ -x "$root/opt/edge/.venv/bin/edge" ]; then
        mkdir -p "$root/usr/local/bin"
        ln -s /opt/edge/.venv/bin/edge "$root/usr/local/bin/edge"
        say "linked /usr/local/bin/edge to /opt/edge/.venv/bin/edge (the units run /usr/local/bin/edge)"
    else
        say "the units run /usr/local/bin/edge, which is missing: give --artifact dist/edge-$(uname -m).pyz" \
            "(make dist), or link a venv's edge there"
    fi
}

[ -z "$artifact" ] || check_artifact

# The numeric id of a user or group in the target tree (getent does not look under --root).
id_of() { # FILE NAME
    awk -F: -v name="$2" '$1 == name { print $3; found = 1 } END { exit !found }' "$root$1"
}

ensure_user() { # NAME HOME
    mkdir -p "$root/etc"
    # Only a fresh --root tree lacks these: the account files useradd edits.
    for file in passwd group; do
        [ -e "$root/etc/$file" ] || { : > "$root/etc/$file"; chmod 0644 "$root/etc/$file"; }
    done
    for file in shadow gshadow; do
        [ -e "$root/etc/$file" ] || { : > "$root/etc/$file"; chmod 0600 "$root/etc/$file"; }
    done
    if id_of /etc/passwd "$1" >/dev/null; then
        return
    fi
    if [ -n "$root" ]; then
        useradd --prefix "$root" --system --user-group --no-create-home --home-dir "$2" \
            --shell /usr/sbin/nologin "$1"
    else
        useradd --system --user-group --no-create-home --home-dir "$2" --shell /usr/sbin/nologin "$1"
    fi
    say "created the system user $1"
}

ensure_dir() { # PATH MODE OWNER GROUP
    mkdir -p "$root$1"
    chown "$3:$4" "$root$1"
    chmod "$2" "$root$1"
}

install_unit() { # NAME
    target="$root/etc/systemd/system/$1"
    mkdir -p "$root/etc/systemd/system"
    if [ -e "$target" ] && ! cmp -s "$here/$1" "$target"; then
        if [ "$force_units" = 0 ]; then
            say "kept $target: it differs from $here/$1 (--force-units replaces it)"
            return
        fi
    fi
    cp "$here/$1" "$target.tmp" && chmod 0644 "$target.tmp" && mv "$target.tmp" "$target"
}

# A file only root reads (systemd hands the service a copy as a credential).
ensure_secret_file() { # PATH
    if [ ! -e "$root$1" ]; then
        (umask 077; : > "$root$1")
    fi
    chown 0:0 "$root$1"
    chmod 0600 "$root$1"
}

if [ -n "$artifact" ]; then install_artifact; else link_venv; fi
ensure_dir /etc/edge 0755 0 0
ensure_dir /var/lib/edge 0755 0 0

for role in $roles; do
    user="edge-$role"
    ensure_user "$user" "/var/lib/edge/$role"
    uid=$(id_of /etc/passwd "$user")
    gid=$(id_of /etc/group "$user")
    ensure_dir "/var/lib/edge/$role" 0700 "$uid" "$gid"
    install_unit "edge-$role.service"
    if [ "$role" = node ]; then
        if [ ! -e "$root/etc/edge/node.env" ]; then
            printf '%s\n' "# The origin this node syncs from, and its certificate (see edge-node.service)." \
                "EDGE_ORIGIN=https://origin.example:8700" "EDGE_ORIGIN_CA=/etc/edge/origin-ca.pem" \
                > "$root/etc/edge/node.env"
            say "wrote $root/etc/edge/node.env: set EDGE_ORIGIN to your origin"
        fi
        chown 0:0 "$root/etc/edge/node.env"
        chmod 0644 "$root/etc/edge/node.env"
        ensure_secret_file /etc/edge/node-token
        if [ "$token_stdin" = 1 ]; then
            token=$(tr -d ' \t\r\n')
            [ -n "$token" ] || die "--token-stdin: no token on standard input"
            printf '%s\n' "$token" > "$root/etc/edge/node-token"
            say "stored the node token in $root/etc/edge/node-token (mode 0600)"
        elif [ ! -s "$root/etc/edge/node-token" ]; then
            say "put the node token in $root/etc/edge/node-token (empty now, mode 0600):" \
                "on the origin host, runuser -u edge-origin -- edge origin token create" \
                "--role node --data /var/lib/edge/origin"
        fi
    fi
done

if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "installed; start with: systemctl enable --now$(for role in $roles; do printf ' edge-%s' "$role"; done)"
else
    say "installed into ${root:-/} (systemd not reloaded)"
fi
