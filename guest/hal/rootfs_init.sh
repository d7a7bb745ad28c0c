#!/bin/busybox sh
# Chrysalis HAL root /sbin/init (after switch_root). Checks what the initramfs set up and prints one
# machine-readable line on the console:
#   CHRYS-HAL-REPORT {"root_device":...,"root_ro":...,...}
# then starts chrys-agent when the image has it, or powers off in self-test mode.
#
# /etc/cocos/init.conf (env_share, written by the host) may hold KEY=VALUE lines; it is parsed, never sourced:
#   mode=agent|selftest      selftest: report and power off (tests, benchmark)
#   write_marker=TOKEN       write /cocos/marker-TOKEN (proves /cocos is writable)
#   check_marker=TOKEN       report whether /cocos/marker-TOKEN exists (data of an earlier boot)
# With CHRYS_INIT_LIB=1 the file only defines its functions (unit tests source it on the host).

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
SYSFS=${SYSFS:-/sys}
PROC=${PROC:-/proc}
CONF=${CONF:-/etc/cocos/init.conf}
AGENT=/usr/bin/chrys-agent

# conf_value KEY: the value of KEY=... in $CONF, restricted to [A-Za-z0-9_-] (anything else is ignored).
conf_value() {
  [ -r "$CONF" ] || return 1
  value=$(sed -n "s/^$1=//p" "$CONF" | head -n 1)
  case "$value" in
    "" | *[!A-Za-z0-9_-]*) return 1 ;;
  esac
  echo "$value"
}

# mount_field MOUNTPOINT FIELD: field 1 (source), 3 (type) or 4 (options) of the last mount on MOUNTPOINT.
mount_field() {
  awk -v mp="$1" -v f="$2" '$2 == mp { v = $f } END { if (v != "") print v }' "$PROC/mounts"
}

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

bool() { if "$@"; then echo true; else echo false; fi; }

is_ro() { case ",$1," in *,ro,*) return 0 ;; *) return 1 ;; esac; }

same_dir() { [ "$(stat -c %d:%i "$1" 2>/dev/null)" = "$(stat -c %d:%i "$2" 2>/dev/null)" ]; }

json_str() { printf '"%s"' "$(printf %s "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

report() {
  root_src=$(mount_field / 1)
  root_opts=$(mount_field / 4)
  cocos_src=$(mount_field /cocos 1)
  cocos_type=$(mount_field /cocos 3)
  cocos_opts=$(mount_field /cocos 4)
  certs_src=$(mount_field /etc/certs 1)
  certs_type=$(mount_field /etc/certs 3)
  env_src=$(mount_field /etc/cocos 1)
  env_type=$(mount_field /etc/cocos 3)
  root_write_refused=false
  if ! (: >/.chrys-write-probe) 2>/dev/null; then root_write_refused=true; else rm -f /.chrys-write-probe; fi
  # The /cocos volume key lived only in chrys-hal-dm and lives on only inside dm-crypt: no key file anywhere in
  # RAM-backed storage, no cryptsetup key left in a keyring, no keyslot that could unwrap it (checked by the host).
  key_gone=true
  if [ -n "$(find /run /tmp /var -name '*.key' -o -name '*.pass' 2>/dev/null | head -n 1)" ]; then key_gone=false; fi
  if [ -r "$PROC/keys" ] && grep -q "cryptsetup:" "$PROC/keys"; then key_gone=false; fi
  marker_written=false
  if token=$(conf_value write_marker); then
    echo "$token" >"/cocos/marker-$token" && sync && marker_written=true
  fi
  marker_present=null
  if token=$(conf_value check_marker); then
    marker_present=$(bool test -e "/cocos/marker-$token")
  fi
  read -r up _ <"$PROC/uptime"
  printf 'CHRYS-HAL-REPORT {"root_device":%s,"root_ro":%s,"root_dm_uuid":%s,"root_write_refused":%s,' \
    "$(json_str "$root_src")" "$(bool is_ro "$root_opts")" "$(json_str "$(dm_uuid root_verity)")" \
    "$root_write_refused"
  printf '"cocos_device":%s,"cocos_fstype":%s,"cocos_rw":%s,"cocos_dm_uuid":%s,"key_gone":%s,' \
    "$(json_str "$cocos_src")" "$(json_str "$cocos_type")" "$(bool test -n "$cocos_opts" -a "${cocos_opts%%,*}" = rw)" \
    "$(json_str "$(dm_uuid cocos_crypt)")" "$key_gone"
  printf '"certs_share":%s,"env_share":%s,"tmp_tmpfs":%s,"var_tmpfs":%s,' \
    "$(bool test "$certs_src" = certs_share -a "$certs_type" = 9p)" \
    "$(bool test "$env_src" = env_share -a "$env_type" = 9p)" \
    "$(bool test "$(mount_field /tmp 3)" = tmpfs)" "$(bool test "$(mount_field /var 3)" = tmpfs)"
  printf '"cocos_init_on_cocos":%s,"container_storage_on_cocos":%s,"agent_present":%s,' \
    "$(bool same_dir /cocos_init /cocos/cocos_init)" "$(bool same_dir /var/lib/chrys /cocos/containers)" \
    "$(bool test -x "$AGENT")"
  printf '"marker_written":%s,"marker_present":%s,"uptime":%s}\n' "$marker_written" "$marker_present" "$up"
}

# load_root_modules: the drivers the agent needs (NIC, virtio-serial, vsock, SEV guest), in one modprobe; the
# initramfs loaded only what it needed itself. A driver that does not load (sev-guest outside SEV-SNP) shows up
# as a missing device later if it matters.
load_root_modules() {
  list=/lib/modules/chrys-root-modules.load
  [ -r "$list" ] || return 0
  names=""
  while read -r module; do
    [ -n "$module" ] || continue
    name=${module##*/}
    names="$names ${name%%.ko*}"
  done <"$list"
  modprobe -a -q $names 2>/dev/null
  read -r up _ <"$PROC/uptime"
  echo "CHRYS-HAL-MARK root-modules $up"
}

main() {
  read -r up _ <"$PROC/uptime"
  echo "CHRYS-HAL-MARK root-init $up"
  load_root_modules
  mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null
  hostname chrys-hal 2>/dev/null
  report
  mode=$(conf_value mode) || mode=agent
  if [ "$mode" = agent ] && [ -x "$AGENT" ]; then
    echo "CHRYS-HAL-MARK agent-exec $(cut -d' ' -f1 "$PROC/uptime")"
    exec "$AGENT" --hal
  fi
  [ "$mode" = agent ] && echo "chrys-hal: no agent in this image ($AGENT); powering off"
  sync
  umount /cocos_init /var/lib/chrys 2>/dev/null
  umount /cocos 2>/dev/null
  poweroff -f
}

if [ "${CHRYS_INIT_LIB:-0}" != 1 ]; then
  main "$@"
fi
