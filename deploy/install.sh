#!/bin/sh
# Install the edge origin and/or node as systemd services under their own users. Idempotent: a
# second run changes nothing but modes and owners that drifted; it never overwrites a token,
# node.env or an installed unit that differs (it says so; --force-units replaces units).
#
# usage: deploy/install.sh [--root DIR] [--force-units] [--token-stdin] origin|node...
#   --root DIR      install into DIR (a staging tree or a test) instead of /: users go to
#                   DIR/etc/passwd (useradd --prefix), nothing is reloaded
#   --token-stdin   node: read the node token from standard input into /etc/edge/node-token
#                   (never give a token as an argument: `ps` shows arguments)
# It does not install the code: the units run /opt/edge/.venv/bin/edge (`python3.13 -m venv
# /opt/edge/.venv && /opt/edge/.venv/bin/pip install /path/to/edge-functions`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
force_units=0
token_stdin=0
roles=""

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=${2%/}; shift 2 ;;
        --root=*) root=${1#--root=}; root=${root%/}; shift ;;
        --force-units) force_units=1; shift ;;
        --token-stdin) token_stdin=1; shift ;;
        origin|node) roles="$roles $1"; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1': expected origin, node, --root DIR, --force-units or --token-stdin" ;;
    esac
done
[ -n "$roles" ] || die "say what to install: origin, node or both (e.g. deploy/install.sh node)"
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root: not a directory"
fi
[ "$(id -u)" = 0 ] || die "run as root (it creates users and root-owned directories), or with sudo"
case " $roles " in *" node "*) ;; *) [ "$token_stdin" = 0 ] || die "--token-stdin is for the node" ;; esac

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
                "on the origin host, runuser -u edge-origin -- /opt/edge/.venv/bin/edge origin token create" \
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
