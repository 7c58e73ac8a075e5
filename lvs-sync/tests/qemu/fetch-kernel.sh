#!/usr/bin/env bash
# Fetches Debian's kernel image package (the one linux-image-amd64 depends on) and extracts
# vmlinuz plus the IPVS modules and everything they depend on (from modules.dep) into DIR:
#   DIR/vmlinuz, DIR/modules/*.ko (decompressed), DIR/modules.order (insmod order).
# Idempotent: does nothing when DIR/modules.order exists. Needs apt-get, dpkg-deb (no root for
# `apt-get download`) and network to the Debian mirror.
set -euo pipefail
dir=${1:?usage: fetch-kernel.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -s $dir/vmlinuz && -s $dir/modules.order ]]; then
    exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $pkg ]]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[[ -n $pkg ]] || { echo "fetch-kernel.sh: cannot resolve linux-image-amd64's kernel package (apt-get update?)" >&2; exit 1; }
work=$(mktemp -d "$dir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) || (cd "$work" && apt-get download "$pkg")
deb=$(ls "$work"/*.deb)
mkdir "$work/x"
dpkg-deb -x "$deb" "$work/x"
kver=${pkg#linux-image-}
moddir=$work/x/lib/modules/$kver
[[ -d $moddir ]] || moddir=$(ls -d "$work"/x/lib/modules/* | head -1)
# The modules we need: IPVS core and its schedulers, and their dependencies, read from each
# module's .modinfo `depends=` (the package ships no modules.dep; depmod makes it at install).
# crc32c_generic is what libcrc32c asks the crypto API for at load (a request_module that an
# initramfs without modprobe cannot answer), so it goes first.
declare -A path_of=()
while IFS= read -r f; do
    n=$(basename "$f"); n=${n%%.ko*}; path_of[${n//-/_}]=${f#"$moddir"/}
done < <(find "$moddir/kernel" -name '*.ko*')
declare -A seen=()
order=()
add() { # depth-first: dependencies before the module
    local n=${1//-/_}
    [[ -n ${seen[$n]:-} ]] && return
    seen[$n]=1
    local p=${path_of[$n]:-}
    [[ -n $p ]] || { echo "fetch-kernel.sh: module $n not in $pkg" >&2; exit 1; }
    local deps d
    deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$moddir/$p" | head -1 | cut -d= -f2 | tr ',' ' ')
    for d in $deps; do add "$d"; done
    order+=("$p")
}
for n in crc32c_generic ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh ip_vs_dh ip_vs_sed ip_vs_nq; do
    add "$n"
done
mkdir -p "$work/out/modules"
: > "$work/out/modules.order"
for m in "${order[@]}"; do
    base=$(basename "$m")
    src=$moddir/$m
    case $base in
        *.ko.xz) xz -dc "$src" > "$work/out/modules/${base%.xz}"; base=${base%.xz} ;;
        *.ko.zst) zstd -qdc "$src" > "$work/out/modules/${base%.zst}"; base=${base%.zst} ;;
        *.ko.gz) gzip -dc "$src" > "$work/out/modules/${base%.gz}"; base=${base%.gz} ;;
        *) cp "$src" "$work/out/modules/$base" ;;
    esac
    echo "$base" >> "$work/out/modules.order"
done
cp "$work"/x/boot/vmlinuz-* "$work/out/vmlinuz"
echo "$pkg" > "$work/out/package"
rm -rf "$dir/modules"
mv "$work/out/modules" "$dir/modules"
mv "$work/out/package" "$dir/package"
mv "$work/out/vmlinuz" "$dir/vmlinuz"
mv "$work/out/modules.order" "$dir/modules.order"   # last: marks the cache complete
echo "fetch-kernel.sh: $pkg -> $dir ($(wc -l < "$dir/modules.order") modules)"
