#!/bin/sh
# Chrysalis HAL initramfs /init (busybox sh, PID 1). Verifies the read-only root with dm-verity, provisions
# /cocos as LUKS2 with a fresh per-boot key held only in RAM, mounts the 9P shares and switches root.
# Any failed check prints "CHRYS-HAL-FATAL: <why>" on the console and powers the VM off: an unverified root
# is never booted and /cocos is never used unencrypted.
#
# With CHRYS_INIT_LIB=1 the file only defines its functions (unit tests source it on the host).

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# No udevd here: libdevmapper creates the /dev/mapper nodes itself.
DM_DISABLE_UDEV=1
export DM_DISABLE_UDEV

SYSFS=${SYSFS:-/sys}
PROC=${PROC:-/proc}
NEWROOT=/root
DEVICE_WAIT_TENTHS=${DEVICE_WAIT_TENTHS:-300}

# mark NAME: a boot phase mark with the guest uptime, read by tests and the benchmark.
mark() {
  read -r up _ <"$PROC/uptime"
  echo "CHRYS-HAL-MARK $1 $up"
}

log() { echo "chrys-hal: $*"; }

# fail MESSAGE: never returns: powers off (the /cocos key lives only in chrys-hal-dm and dm-crypt).
fail() {
  echo "CHRYS-HAL-FATAL: $*"
  sync
  if [ "${CHRYS_INIT_LIB:-0}" = 1 ]; then
    exit 1
  fi
  poweroff -f
  sleep 10
  exit 1
}

# cmdline_value NAME [CMDLINE]: prints the value of NAME=value on the kernel command line; 1 when absent.
cmdline_value() {
  line=${2-$(cat "$PROC/cmdline")}
  for word in $line; do
    case "$word" in
      "$1="*)
        echo "${word#*=}"
        return 0
        ;;
    esac
  done
  return 1
}

# valid_roothash HASH: a sha256 root hash, 64 lower-case hex digits.
valid_roothash() {
  [ "${#1}" -eq 64 ] || return 1
  case "$1" in
    *[!0-9a-f]*) return 1 ;;
  esac
  return 0
}

# partition_by_label LABEL: prints /dev/NAME of the one partition whose GPT name is LABEL.
# Returns 1 when none has it, 2 when more than one does (ambiguous: refuse to guess).
partition_by_label() {
  found=""
  for uevent in "$SYSFS"/class/block/*/uevent; do
    [ -r "$uevent" ] || continue
    # Shell builtins only: a grep/sed per block device costs tens of milliseconds each under TCG.
    devname=""
    partname=""
    while IFS== read -r key value; do
      case "$key" in
        DEVNAME) devname=$value ;;
        PARTNAME) partname=$value ;;
      esac
    done <"$uevent"
    if [ "$partname" = "$1" ]; then
      [ -n "$found" ] && return 2
      found=/dev/$devname
    fi
  done
  [ -n "$found" ] || return 1
  echo "$found"
}

# resolve_partition LABEL FALLBACK: by GPT label, else the seed's fixed name when that block device exists.
resolve_partition() {
  dev=$(partition_by_label "$1")
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "$dev"
    return 0
  fi
  if [ $rc -eq 2 ]; then
    echo "more than one partition is labelled $1" >&2
    return 2
  fi
  if [ -b "$2" ] || [ "${ALLOW_FAKE_DEVICES:-0}" = 1 -a -e "$2" ]; then
    echo "$2"
    return 0
  fi
  return 1
}

# dm_uuid NAME: the device-mapper uuid of mapping NAME ("CRYPT-VERITY-...", "CRYPT-LUKS2-...").
dm_uuid() {
  for dm in "$SYSFS"/block/dm-*/dm; do
    [ -r "$dm/name" ] || continue
    if [ "$(cat "$dm/name")" = "$1" ]; then
      cat "$dm/uuid"
      return 0
    fi
  done
  return 1
}

early_mounts() {
  mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
  exec </dev/console >/dev/console 2>&1
  mount -t proc -o nosuid,nodev,noexec proc /proc
  mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
  mkdir -p /dev/pts
  mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
}

load_modules() {
  read -r release <"$PROC/sys/kernel/osrelease"
  list=/lib/modules/chrys-modules.load
  [ -r "$list" ] || fail "module list $list missing from the initramfs"
  [ -r "/lib/modules/$release/modules.dep" ] || fail "modules.dep for kernel $release missing from the initramfs"
  names=""
  while read -r module; do
    [ -n "$module" ] || continue
    name=${module##*/}
    names="$names ${name%%.ko*}"
  done <"$list"
  # One process loads them all in dependency order (an exec costs tens of milliseconds under TCG). A module
  # that does not load (sev-guest outside an SEV-SNP guest) shows up as a missing device later if it matters.
  modprobe -a -q $names 2>/dev/null
  not_loaded=""
  for name in $names; do
    [ -d "$SYSFS/module/${name//-/_}" ] || not_loaded="$not_loaded $name"
  done
  [ -z "$not_loaded" ] || log "modules not loaded:$not_loaded"
  # configfs is optional.
  if [ -d "$SYSFS/kernel/config" ]; then
    mount -t configfs configfs /sys/kernel/config 2>/dev/null || true
  fi
}

# wait_for_partitions: the disk appears asynchronously after virtio_scsi probes it.
wait_for_partitions() {
  tries=0
  while :; do
    ROOT_DEV=$(resolve_partition chrys-root /dev/sda2) &&
      VERITY_DEV=$(resolve_partition chrys-verity /dev/sda3) &&
      COCOS_DEV=$(resolve_partition chrys-cocos /dev/sda4) && return 0
    tries=$((tries + 1))
    [ $tries -ge "$DEVICE_WAIT_TENTHS" ] && fail "boot disk partitions (chrys-root/chrys-verity/chrys-cocos or /dev/sda2-4) did not appear within $((DEVICE_WAIT_TENTHS / 10)) s"
    sleep 0.1
  done
}

# open_devices: one chrys-hal-dm run opens the dm-verity root and provisions /cocos as LUKS2 under a fresh random
# key that exists only in that process and in dm-crypt (no key file, no keyslot, no KDF). It opens verity first,
# reads the root's first block through it (dm-verity checks lazily, so a wrong roothash shows here) and touches
# /cocos only after both succeeded. It prints the verity-open, luks-format and luks-open marks.
open_devices() {
  roothash=$(cmdline_value roothash) || fail "no roothash= on the kernel command line: refusing to boot an unverified root"
  valid_roothash "$roothash" || fail "roothash= is not a 64-digit hex sha256 root hash: refusing to boot"
  [ "$ROOT_DEV" != "$VERITY_DEV" ] || fail "root and verity partitions are the same device"
  [ "$COCOS_DEV" != "$ROOT_DEV" ] && [ "$COCOS_DEV" != "$VERITY_DEV" ] ||
    fail "the cocos partition resolves to the root or verity partition; refusing to format it"
  chrys-hal-dm --verity "$ROOT_DEV" "$VERITY_DEV" "$roothash" root_verity --luks "$COCOS_DEV" cocos_crypt chrys-cocos
  case $? in
    0) ;;
    3) fail "dm-verity open failed for $ROOT_DEV with hash device $VERITY_DEV" ;;
    5) fail "dm-verity: the root partition does not match roothash=$roothash (wrong root hash or tampered image); refusing to switch_root" ;;
    4) fail "LUKS2 format or open of $COCOS_DEV failed: /cocos would be unencrypted" ;;
    *) fail "chrys-hal-dm failed (root $ROOT_DEV, verity $VERITY_DEV, cocos $COCOS_DEV)" ;;
  esac
}

mount_verified_root() {
  mkdir -p "$NEWROOT"
  mount -t ext4 -o ro,nodev /dev/mapper/root_verity "$NEWROOT" ||
    fail "cannot mount /dev/mapper/root_verity read-only (dm-verity I/O error: root corrupted?)"
  case "$(dm_uuid root_verity)" in
    CRYPT-VERITY-*) ;;
    *) fail "/dev/mapper/root_verity is not a dm-verity mapping" ;;
  esac
  mark root-mounted
}

make_cocos() {
  case "$(dm_uuid cocos_crypt)" in
    CRYPT-LUKS2-*) ;;
    *) fail "/dev/mapper/cocos_crypt is not a LUKS2 dm-crypt mapping" ;;
  esac
  # Lazy inode-table init: no full-device write at boot. No journal: the filesystem cannot outlive this boot
  # (its key dies with it), so there is nothing to recover after a crash.
  mkfs.ext4 -q -F -m 0 -L cocos -O ^has_journal -E lazy_itable_init=1,nodiscard /dev/mapper/cocos_crypt ||
    fail "mkfs.ext4 on /dev/mapper/cocos_crypt failed"
  mark mkfs
  mount -t ext4 -o nodev,nosuid /dev/mapper/cocos_crypt "$NEWROOT/cocos" || fail "cannot mount /cocos"
  for dir in .cache/oci datasets containers cocos_init; do
    mkdir -p "$NEWROOT/cocos/$dir" || fail "cannot create /cocos/$dir"
  done
  mark cocos-mounted
}

runtime_mounts() {
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$NEWROOT/tmp" || fail "cannot mount tmpfs on /tmp"
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$NEWROOT/var" || fail "cannot mount tmpfs on /var"
  mkdir -p "$NEWROOT/var/lib/chrys" "$NEWROOT/var/log" "$NEWROOT/var/tmp"
  chmod 1777 "$NEWROOT/var/tmp"
  mount --bind "$NEWROOT/cocos/containers" "$NEWROOT/var/lib/chrys" || fail "cannot bind the container storage"
  mount --bind "$NEWROOT/cocos/cocos_init" "$NEWROOT/cocos_init" || fail "cannot bind /cocos_init"
  # /etc: the verified root below, RAM above, so the agent can write hosts/resolv.conf/hostname (before the 9P
  # shares are mounted on /etc/certs and /etc/cocos of the overlay).
  mkdir -p /run/chrys-etc/upper /run/chrys-etc/work
  mount -t overlay overlay \
    -o "lowerdir=$NEWROOT/etc,upperdir=/run/chrys-etc/upper,workdir=/run/chrys-etc/work,nodev,nosuid" \
    "$NEWROOT/etc" || fail "cannot mount the /etc overlay"
}

# The shares carry the agent configuration and TLS material; a VM started without them still boots (the
# agent reports their absence) but the warning says why the pod will not come up.
mount_shares() {
  if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,nodev,nosuid certs_share "$NEWROOT/etc/certs"; then
    log "certs_share mounted on /etc/certs"
  else
    log "warning: 9P share certs_share is missing"
  fi
  if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,nodev,nosuid env_share "$NEWROOT/etc/cocos"; then
    log "env_share mounted on /etc/cocos"
  else
    log "warning: 9P share env_share is missing"
  fi
  mark shares
}

# Refuses to switch into a root whose init cannot be read back through dm-verity.
check_new_init() {
  for file in /sbin/init /bin/busybox; do
    [ -e "$NEWROOT$file" ] || fail "$file is missing from the verified root"
    cat "$NEWROOT$file" >/dev/null 2>&1 ||
      fail "dm-verity: reading $file from the root failed (I/O error: the root partition was modified); refusing to switch_root"
  done
}

switch_to_root() {
  check_new_init
  mark switch-root
  for fs in dev proc sys run; do
    mount --move "/$fs" "$NEWROOT/$fs" || fail "cannot move /$fs into the new root"
  done
  exec switch_root "$NEWROOT" /sbin/init
  fail "switch_root failed"
}

main() {
  early_mounts
  mark init
  load_modules
  mark modules
  wait_for_partitions
  log "root=$ROOT_DEV verity=$VERITY_DEV cocos=$COCOS_DEV"
  mark disk
  open_devices
  mount_verified_root
  make_cocos
  runtime_mounts
  mount_shares
  switch_to_root
}

if [ "${CHRYS_INIT_LIB:-0}" != 1 ]; then
  main "$@"
fi
