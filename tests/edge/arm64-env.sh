#!/usr/bin/env bash
# An aarch64 Python with the runtime's packages, for the ARM64 check under qemu's user-mode emulation (no binfmt,
# no mounts, no chroot): Debian bookworm's arm64 python3 unpacked into DIR/rootfs, the aarch64 wheels of numpy,
# onnxruntime and tokenizers (pinned by CONSTRAINTS) in DIR/site. Run as qemu-aarch64-static -cpu neoverse-n1
# -L DIR/rootfs DIR/rootfs/usr/bin/python3. Reruns skip what is there.
#   usage: tests/edge/arm64-env.sh DIR CONSTRAINTS
set -euo pipefail
dir=$1
constraints=$2
mkdir -p "$dir"
if [ ! -x "$dir/rootfs/usr/bin/python3" ]; then
    rm -rf "$dir/rootfs"
    # --foreign only downloads and unpacks (its second stage would run arm64 code); unpack every package it fetched
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm "$dir/rootfs" \
        http://deb.debian.org/debian
    for deb in "$dir"/rootfs/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$dir/rootfs"
    done
fi
# qemu-user shows the host's (x86) /proc/cpuinfo, on which onnxruntime's CPU detection crashes at import; qemu reads
# a file under the -L prefix first, so the prefix gets the cpuinfo of the core emulated (Neoverse N1: AWS Graviton2)
mkdir -p "$dir/rootfs/proc"
cat > "$dir/rootfs/proc/cpuinfo" <<'CPUINFO'
processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1
CPUINFO
if [ ! -d "$dir/site/onnxruntime" ]; then
    rm -rf "$dir/site"
    python3 -m pip install --quiet --target "$dir/site" --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        -c "$constraints" numpy onnxruntime tokenizers
fi
