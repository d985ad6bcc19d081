#!/usr/bin/env bash
# Makes every package of Outpost from the workspace, into OUT (default target/packages):
#
#   outpost_VERSION-1_ARCH.deb             cargo-deb (Cargo.toml [package.metadata.deb])
#   outpost-VERSION-linux-MACHINE.tar.gz   offline installer: binary, unit, install.sh, SHA256SUMS
#   image/                                 container build context: Containerfile, rootfs/
#                                          (the binary and the libraries it loads, nothing
#                                          else), data/ (the empty data dir), compose.yaml
#   outpost-VERSION-image.tar              with --image: the image built FROM scratch with no
#                                          network (podman or buildah), saved for a USB stick
#                                          (`podman load -i` on the node)
#
# Usage: packaging/build.sh [--binary PATH] [--out DIR] [--image [--image-name NAME]]
#   --binary PATH  package this binary instead of building `cargo build --release --locked`
#                  (the tests package the binary they were built with)
#   --image-name   the image's name, tagged VERSION and latest (default outpost)
#
# Needs cargo-deb (.ci/deps-packaging.sh installs it), sha256sum, tar, ldd. No network.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
binary=""
out=""
image=false
image_name=outpost
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --image) image=true; shift ;;
        --image-name) image_name="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${out:-$target_dir/packages}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked --bin outpost)
    binary="$target_dir/release/outpost"
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }

version="$("$binary" --version | awk '{print $2}')"
machine="$(uname -m)"
[ -n "$version" ] || { echo "build.sh: $binary --version printed no version" >&2; exit 1; }

# cargo-deb takes built products from `target/release/` of the target dir it is given; stage
# the chosen binary there so that it packages exactly that file and builds nothing.
stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/target/release"
cp "$binary" "$stage/target/release/outpost"

# 1. The .deb.
(cd "$root" && CARGO_TARGET_DIR="$stage/target" cargo deb --no-build --locked --quiet \
    --deb-version "$version-1" -o "$out/" >/dev/null)
deb="$(ls "$out"/outpost_"$version"-1_*.deb)"
echo "built $deb"

# 2. The offline installer tarball. The unit, user and data dir are the .deb's own files.
name="outpost-$version-linux-$machine"
dir="$stage/$name"
mkdir -p "$dir"
install -m 0755 "$binary" "$dir/outpost"
install -m 0644 "$here/outpost.service" "$dir/outpost.service"
install -m 0644 "$here/outpost.sysusers" "$dir/outpost-sysusers.conf"
install -m 0644 "$here/outpost.tmpfile" "$dir/outpost-tmpfiles.conf"
install -m 0644 "$root/README.md" "$dir/README.md"
install -m 0755 "$here/install.sh" "$dir/install.sh"
(cd "$dir" && sha256sum outpost outpost.service outpost-sysusers.conf outpost-tmpfiles.conf \
    README.md install.sh > SHA256SUMS)
# Same bytes for the same inputs: fixed owner, order and times.
mtime="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C "$stage" -cf - "$name" | gzip -n > "$out/$name.tar.gz"
echo "built $out/$name.tar.gz"

# 3. The container build context: rootfs/ with the binary, the shared libraries ldd names
#    (loader included, at the paths the binary asks for) and a passwd line for the user;
#    data/outpost, the empty data dir (the Containerfile gives it to the user).
ctx="$out/image"
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc" "$ctx/rootfs/var/lib" "$ctx/data/outpost"
install -m 0755 "$binary" "$ctx/rootfs/usr/bin/outpost"
ldd "$binary" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
echo "outpost:x:10001:10001:Outpost node:/var/lib/outpost:/nonexistent" > "$ctx/rootfs/etc/passwd"
echo "outpost:x:10001:" > "$ctx/rootfs/etc/group"
chmod 0700 "$ctx/data/outpost"
cp "$here/Containerfile" "$ctx/Containerfile"
cp "$here/compose.yaml" "$ctx/compose.yaml"
echo "built $ctx (podman build --network=none --pull=never -t outpost:$version $ctx)"

# 4. The image itself, when asked.
if $image; then
    tar_out="$out/outpost-$version-image.tar"
    rm -f "$tar_out"
    if command -v podman >/dev/null 2>&1; then
        podman build --quiet --network=none --pull=never \
            -t "$image_name:$version" -t "$image_name:latest" "$ctx" >/dev/null
        podman save --quiet -o "$tar_out" "$image_name:$version"
    elif command -v buildah >/dev/null 2>&1; then
        buildah bud --quiet --network=none --pull-never \
            -t "$image_name:$version" -t "$image_name:latest" "$ctx" >/dev/null
        buildah push --quiet "$image_name:$version" "docker-archive:$tar_out:$image_name:$version"
    else
        echo "build.sh: --image needs podman or buildah" >&2
        exit 1
    fi
    echo "built $tar_out (image $image_name:$version, also tagged latest)"
fi
