#!/usr/bin/env python3
"""Generates a test image in skopeo's `dir:` layout: a small gzip layer, a random layer of
at least 32 MiB (gzip, so that skopeo pushes it as it is rather than compressing it and
changing its digest), an OCI config and manifest. Nothing is committed:
the layers are made fresh each run.

usage: make-image.py OUTPUT_DIR [BIG_LAYER_MIB]
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put(out: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, digest), "wb") as f:
        f.write(data)
    return digest


def main() -> None:
    out = sys.argv[1]
    big_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 33
    os.makedirs(out, exist_ok=True)
    small_tar = tar_of("hello.txt", b"hello from tower-signed-redirect e2e\n")
    small_gz = gzip.compress(small_tar, mtime=0)
    big_tar = tar_of("random.bin", os.urandom(big_mib * 1024 * 1024))
    big_gz = gzip.compress(big_tar, compresslevel=1, mtime=0)
    layers = [
        ("application/vnd.oci.image.layer.v1.tar+gzip", small_gz, small_tar),
        ("application/vnd.oci.image.layer.v1.tar+gzip", big_gz, big_tar),
    ]
    descriptors, diff_ids = [], []
    for media_type, blob, uncompressed in layers:
        digest = put(out, blob)
        descriptors.append({"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(blob)})
        diff_ids.append("sha256:" + hashlib.sha256(uncompressed).hexdigest())
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = put(out, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": descriptors,
        },
        separators=(",", ":"),
    ).encode()
    with open(os.path.join(out, "manifest.json"), "wb") as f:
        f.write(manifest)
    with open(os.path.join(out, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")
    print(f"image: {len(layers) + 1} blobs, big layer {len(big_gz)} bytes, config sha256:{config_digest}")


if __name__ == "__main__":
    main()
