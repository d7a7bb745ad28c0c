#!/usr/bin/env bash
# Builds the quick-start demo image as an OCI image layout from Debian packages only (no registry needed):
# one gzip layer with busybox-static (/bin/busybox and its applet links) and /usr/local/bin/chrysalis-hello,
# a script that prints where it runs (kernel, DMI vendor, CPUs, memory). Reproducible: the same busybox
# package gives byte-identical blobs (sorted tar entries, fixed owners and times, gzip -n).
#
# Usage: build-demo-image.sh OUT_DIR [REFERENCE]   (REFERENCE default: localhost/chrysalis/demo:latest)
# Prints the manifest digest on success. Import it with: chrysctl import --name REFERENCE OUT_DIR
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: $0 OUT_DIR [REFERENCE]" >&2
  exit 2
fi
out=$1
ref=${2:-localhost/chrysalis/demo:latest}
busybox=${BUSYBOX:-/bin/busybox}
# A fixed time for every entry (2023-11-14), so the blobs do not depend on when they were built.
epoch=1700000000

for tool in tar gzip sha256sum stat; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 1; }
done
if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "$0: $busybox is not a working busybox (install busybox-static)" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "$0: $busybox is dynamically linked; the image needs busybox-static's binary" >&2
  exit 1
fi

# Modes of the files in the layer must not depend on the caller's umask.
umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/chrys-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,root,usr/local/bin,var/log}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  case $applet in busybox | linuxrc) continue ;; esac
  ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
cat >"$root/usr/local/bin/chrysalis-hello" <<'HELLO'
#!/bin/sh
# Prints what proves where this container runs: the kernel that runs it and the machine under that kernel.
echo "hello from a Chrysalis pod VM"
echo "kernel:   $(cat /proc/version)"
echo "machine:  $(cat /sys/class/dmi/id/sys_vendor 2>/dev/null || echo unknown) $(cat /sys/class/dmi/id/product_name 2>/dev/null)"
echo "cpus:     $(nproc)"
echo "memory:   $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "hostname: $(hostname)"
HELLO
chmod 0755 "$root/usr/local/bin/chrysalis-hello"

tar_opts=(--sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu)
(cd "$root" && tar "${tar_opts[@]}" -cf "$work/layer.tar" .)
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"

mkdir -p "$out/blobs/sha256"
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# Stores a file as a blob, prints its hex digest.
put_blob() {
  local digest
  digest=$(sha "$1")
  cp "$1" "$out/blobs/sha256/$digest"
  echo "$digest"
}

diff_id=$(sha "$work/layer.tar")
layer_digest=$(put_blob "$work/layer.tar.gz")
layer_size=$(size "$work/layer.tar.gz")

created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/usr/local/bin/chrysalis-hello"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"deploy/demo/build-demo-image.sh: busybox-static + chrysalis-hello"}]}' \
  "$created" "$diff_id" "$created" >"$work/config.json"
config_digest=$(put_blob "$work/config.json")
config_size=$(size "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
manifest_digest=$(put_blob "$work/manifest.json")
manifest_size=$(size "$work/manifest.json")

printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest_digest" "$manifest_size" "$ref" >"$out/index.json"
echo "sha256:$manifest_digest"
