#!/usr/bin/env bash
# Installs Chrysalis (chrysd, chrysctl, guest artifacts, config, systemd unit, example CNI config) from a
# build tree into a root directory, or removes it again. Idempotent: running it twice changes nothing.
set -euo pipefail

prog=install.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<EOF
Usage: $prog [options]

Installs Chrysalis from a build tree into ROOT (default /):
  ROOT/usr/local/bin/{chrysd,chrysctl}        from BUILD/cri/
  ROOT/var/lib/chrysalis/guest/               guest artifacts (kernel, initramfs, manifest.json), when built
  ROOT/etc/chrysalis/config.yaml              default config; an edited one is kept (new one: config.yaml.new)
  ROOT/etc/systemd/system/chrysd.service      systemd unit
  ROOT/etc/cni/net.d/10-chrysalis.conflist    example CNI config, only when that directory has no config
Running it again changes only what differs. Records of what it installed: ROOT/var/lib/chrysalis/install/.

Options:
  --root DIR         install below DIR instead of / (nothing outside DIR is touched)
  --build-dir DIR    CMake build tree with cri/chrysd and cri/chrysctl (default: $script_dir/../build)
  --guest-dir DIR    guest artifacts directory with manifest.json (default: BUILD/guest-image); when given,
                     or with --require-guest, missing artifacts are an error, otherwise a warning
  --require-guest    fail when the guest artifacts are missing
  --config FILE      config to install instead of deploy/config.yaml
  --force-config     replace ROOT/etc/chrysalis/config.yaml even when it was edited
  --no-cni           do not install the example CNI config
  --no-unit          do not install the systemd unit (chrysd runs elsewhere, e.g. in the chart's daemon mode)
  --start            (ROOT=/ only) enable and (re)start chrysd.service
  --uninstall        remove what install put there; an edited config and chrysd's state are kept
  --purge            with --uninstall: also remove the config and the state directory /var/lib/chrysalis
  -h, --help         this help
EOF
}

die() {
  echo "$prog: error: $*" >&2
  exit 1
}
say() { echo "$prog: $*"; }

root=/
build_dir="$script_dir/../build"
guest_dir=""
guest_explicit=0
require_guest=0
config_src="$script_dir/config.yaml"
force_config=0
install_cni=1
install_unit=1
start=0
uninstall=0
purge=0

need_arg() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see $prog --help)"; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --root) need_arg "$@"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --build-dir) need_arg "$@"; build_dir=$2; shift 2 ;;
    --build-dir=*) build_dir=${1#*=}; shift ;;
    --guest-dir) need_arg "$@"; guest_dir=$2; guest_explicit=1; shift 2 ;;
    --guest-dir=*) guest_dir=${1#*=}; guest_explicit=1; shift ;;
    --require-guest) require_guest=1; shift ;;
    --config) need_arg "$@"; config_src=$2; shift 2 ;;
    --config=*) config_src=${1#*=}; shift ;;
    --force-config) force_config=1; shift ;;
    --no-cni) install_cni=0; shift ;;
    --no-unit) install_unit=0; shift ;;
    --start) start=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see $prog --help)" ;;
  esac
done

[ -d "$root" ] || die "root directory '$root' does not exist"
root=$(cd "$root" && pwd)
# Paths inside the root. With root=/ they are the real system paths.
prefix=${root%/}
bin_dir=$prefix/usr/local/bin
etc_dir=$prefix/etc/chrysalis
config_dst=$etc_dir/config.yaml
unit_dst=$prefix/etc/systemd/system/chrysd.service
guest_dst=$prefix/var/lib/chrysalis/guest
cni_dir=$prefix/etc/cni/net.d
cni_dst=$cni_dir/10-chrysalis.conflist
record_dir=$prefix/var/lib/chrysalis/install
unit_src=$script_dir/chrysd.service
cni_src=$script_dir/cni/10-chrysalis.conflist

# systemctl is only used for the real root on a machine booted with systemd.
systemd_usable() { [ "$root" = / ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

sha() { sha256sum "$1" | cut -d' ' -f1; }
recorded() { cat "$record_dir/$1.sha256" 2>/dev/null || true; }
record() {
  [ "$(recorded "$1")" = "$2" ] && return 0
  mkdir -p "$record_dir" && echo "$2" >"$record_dir/$1.sha256"
}

# Copies $1 to $2 with mode $3 unless identical; the rename keeps a running binary's file intact.
install_file() {
  local src=$1 dst=$2 mode=$3
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    say "unchanged $dst"
    return
  fi
  mkdir -p "$(dirname "$dst")"
  local tmp
  tmp=$(mktemp "$dst.XXXXXX")
  cp "$src" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dst"
  say "installed $dst"
}

# Readable regular file, or an error naming what is wrong with it.
check_readable_file() {
  local what=$1 path=$2
  [ -e "$path" ] || die "$what '$path' does not exist"
  [ -f "$path" ] || die "$what '$path' is not a regular file"
  if ! head -c1 "$path" >/dev/null 2>&1; then
    die "$what '$path' is not readable (permission denied or I/O error)"
  fi
}

# Runs chrysd's own parser on a config file; its message names the key or line that is wrong.
check_config() {
  local what=$1 path=$2 out
  check_readable_file "$what" "$path"
  if ! out=$("$chrysd_src" --config "$path" --print-config 2>&1 >/dev/null); then
    die "$what '$path' is not a valid chrysd config: ${out#chrysd: }"
  fi
}

do_uninstall() {
  if systemd_usable && [ -f "$unit_dst" ]; then
    # KillMode=process: stopping the unit stops chrysd only; running VMs are left alone.
    systemctl disable --now chrysd.service || say "warning: could not stop chrysd.service"
  fi
  local f
  for f in "$bin_dir/chrysd" "$bin_dir/chrysctl" "$unit_dst"; do
    if [ -e "$f" ]; then
      rm -f "$f"
      say "removed $f"
    fi
  done
  if systemd_usable; then
    systemctl daemon-reload || true
  fi
  if [ -d "$guest_dst" ]; then
    rm -rf "$guest_dst"
    say "removed $guest_dst"
  fi
  if [ -f "$cni_dst" ]; then
    if [ "$(sha "$cni_dst")" = "$(recorded cni)" ]; then
      rm -f "$cni_dst"
      say "removed $cni_dst"
    else
      say "kept $cni_dst (not installed by $prog, or edited)"
    fi
  fi
  rm -f "$config_dst.new"
  if [ -f "$config_dst" ]; then
    if [ "$purge" = 1 ] || [ "$(sha "$config_dst")" = "$(recorded config)" ]; then
      rm -f "$config_dst"
      say "removed $config_dst"
    else
      say "kept edited $config_dst (remove it by hand, or use --purge)"
    fi
  fi
  rmdir "$etc_dir" 2>/dev/null || true
  rm -rf "$record_dir"
  if [ "$purge" = 1 ] && [ -d "$prefix/var/lib/chrysalis" ]; then
    rm -rf "$prefix/var/lib/chrysalis"
    say "removed $prefix/var/lib/chrysalis"
  fi
  say "uninstalled from $root"
}

if [ "$uninstall" = 1 ]; then
  do_uninstall
  exit 0
fi
[ "$purge" = 0 ] || die "--purge only goes with --uninstall"

# 1. Everything this install needs must exist before anything is changed.
[ -d "$build_dir" ] || die "build directory '$build_dir' does not exist (build first: cmake -S . -B build -G Ninja && cmake --build build, or pass --build-dir)"
build_dir=$(cd "$build_dir" && pwd)
chrysd_src=$build_dir/cri/chrysd
chrysctl_src=$build_dir/cri/chrysctl
missing=()
for f in "$chrysd_src" "$chrysctl_src"; do
  [ -x "$f" ] || missing+=("$f")
done
if [ "${#missing[@]}" -gt 0 ]; then
  die "build outputs missing: ${missing[*]} (not built yet? run: cmake --build $build_dir --target chrysd chrysctl)"
fi
[ -n "$guest_dir" ] || guest_dir=$build_dir/guest-image
have_guest=0
if [ -f "$guest_dir/manifest.json" ]; then
  have_guest=1
elif [ "$guest_explicit" = 1 ] || [ "$require_guest" = 1 ]; then
  die "guest artifacts missing: '$guest_dir/manifest.json' not found (not built yet? run: cmake --build $build_dir --target guest-image)"
fi
[ "$install_unit" = 0 ] || check_readable_file "unit file" "$unit_src"
[ "$install_cni" = 0 ] || check_readable_file "CNI config" "$cni_src"
check_config "config file" "$config_src"
config_action=install
if [ -e "$config_dst" ] || [ -L "$config_dst" ]; then
  if [ -f "$config_dst" ] && cmp -s "$config_src" "$config_dst"; then
    config_action=same
  elif [ "$force_config" = 1 ]; then
    config_action=install
  elif [ -f "$config_dst" ] && [ "$(sha "$config_dst")" = "$(recorded config)" ]; then
    config_action=install  # still the default a previous run installed: upgrade it
  else
    check_config "installed config file" "$config_dst"
    config_action=keep
  fi
fi
[ "$start" = 0 ] || [ "$install_unit" = 1 ] || die "--start and --no-unit exclude each other"
if [ "$start" = 1 ] && ! systemd_usable; then
  die "--start needs --root / on a machine running systemd"
fi

# 2. Install.
install_file "$chrysd_src" "$bin_dir/chrysd" 0755
install_file "$chrysctl_src" "$bin_dir/chrysctl" 0755

case "$config_action" in
  install)
    install_file "$config_src" "$config_dst" 0644
    record config "$(sha "$config_dst")"
    rm -f "$config_dst.new"
    ;;
  same)
    say "unchanged $config_dst"
    record config "$(sha "$config_dst")"
    ;;
  keep)
    install_file "$config_src" "$config_dst.new" 0644
    say "kept edited $config_dst; the new default is $config_dst.new (or use --force-config)"
    ;;
esac

[ "$install_unit" = 0 ] || install_file "$unit_src" "$unit_dst" 0644

if [ "$have_guest" = 1 ]; then
  if [ -d "$guest_dst" ] && diff -r -q "$guest_dir" "$guest_dst" >/dev/null 2>&1; then
    say "unchanged $guest_dst"
  else
    # Build the new tree beside the old one and swap, so chrysd never sees a half-copied guest.
    mkdir -p "$(dirname "$guest_dst")"
    rm -rf "$guest_dst.new" "$guest_dst.old"
    cp -a "$guest_dir" "$guest_dst.new"
    [ ! -e "$guest_dst" ] || mv "$guest_dst" "$guest_dst.old"
    mv "$guest_dst.new" "$guest_dst"
    rm -rf "$guest_dst.old"
    say "installed $guest_dst"
  fi
else
  say "warning: guest artifacts not built yet ('$guest_dir/manifest.json' missing): chrysd serves but cannot boot VMs until they are installed (cmake --build $build_dir --target guest-image, then rerun)" >&2
fi

if [ "$install_cni" = 1 ]; then
  if [ -f "$cni_dst" ]; then
    if cmp -s "$cni_src" "$cni_dst"; then
      say "unchanged $cni_dst"
    else
      say "kept $cni_dst (edited)"
    fi
  elif compgen -G "$cni_dir/*.conflist" >/dev/null || compgen -G "$cni_dir/*.conf" >/dev/null ||
    compgen -G "$cni_dir/*.json" >/dev/null; then
    say "skipped the example CNI config: $cni_dir already has a network config"
  else
    install_file "$cni_src" "$cni_dst" 0644
    record cni "$(sha "$cni_dst")"
  fi
fi

if [ "$install_unit" = 1 ] && systemd_usable; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    systemctl enable chrysd.service
    systemctl restart chrysd.service
    say "chrysd.service restarted"
  else
    say "start it with: systemctl enable --now chrysd.service"
  fi
fi
say "installed into $root"
