#!/usr/bin/env bash
# Build the local busybox stack image `paas/busybox:latest` from Debian's busybox-static.
# No image can be pulled here, so the rootfs is assembled from the static binary and
# `docker import`ed. Idempotent: does nothing when the image exists, unless FORCE=1.
set -euo pipefail
IMAGE=${IMAGE:-paas/busybox:latest}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
BUSYBOX=${BUSYBOX:-/bin/busybox}
if ! "$BUSYBOX" --list 2>/dev/null | grep -qx httpd; then
  echo "busybox at $BUSYBOX has no httpd applet; install Debian's busybox-static" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,www,app}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' \
  --change 'WORKDIR /app' \
  --change 'CMD ["/bin/sh"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
