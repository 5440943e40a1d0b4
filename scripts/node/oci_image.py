#!/usr/bin/env python3
"""Write an OCI image archive (an oci-layout directory, tarred) from layer tars.

    oci_image.py --name docker.io/library/debian:bookworm-slim \\
        --layer rootfs.tar --cmd bash --env PATH=/usr/local/sbin:... -o image.tar

The archive is what `ctr -n k8s.io images import` and `buildah pull
oci-archive:...` accept. Layers stay uncompressed (the images never leave this
machine). The manifest carries both `io.containerd.image.name` (the full name
that ctr import uses) and `org.opencontainers.image.ref.name`. The output is
deterministic for the same inputs: no timestamps but a fixed creation time.

Standard library only (Debian's python3 runs it, before any venv exists).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

CREATED = "2000-01-01T00:00:00Z"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _layer_from_files(files: list[str], work: Path) -> Path:
    """A layer tar from DEST=SRC[:MODE] entries (parents created as dirs)."""
    out = work / f"files-{len(list(work.iterdir()))}.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for spec in files:
            dest, _, src = spec.partition("=")
            src, _, mode = src.partition(":")
            dest = dest.strip("/")
            parts = dest.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 946684800
                    tar.addfile(info)
                    dirs.add(d)
            data = Path(src).read_bytes()
            info = tarfile.TarInfo(dest)
            info.size, info.mtime = len(data), 946684800
            info.mode = int(mode, 8) if mode else 0o755
            tar.addfile(info, io.BytesIO(data))
    return out


def build(name: str, layers: list[Path], out: Path, *, cmd: list[str] | None,
          entrypoint: list[str] | None, env: list[str], workdir: str | None,
          user: str | None, labels: dict[str, str]) -> str:
    """Write the archive; return the manifest digest."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmp:
        root = Path(tmp) / "layout"
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put_bytes(data: bytes) -> tuple[str, int]:
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return digest, len(data)

        layer_descs, diff_ids = [], []
        for layer in layers:
            digest = _sha256_file(layer)
            target = blobs / digest
            try:
                os.link(layer, target)  # same filesystem: no copy
            except OSError:
                shutil.copyfile(layer, target)
            size = layer.stat().st_size
            layer_descs.append({"mediaType": MEDIA_LAYER, "digest": f"sha256:{digest}",
                                "size": size})
            diff_ids.append(f"sha256:{digest}")  # uncompressed: digest == diff ID
        config: dict[str, object] = {"Env": env}
        if cmd is not None:
            config["Cmd"] = cmd
        if entrypoint is not None:
            config["Entrypoint"] = entrypoint
        if workdir:
            config["WorkingDir"] = workdir
        if user:
            config["User"] = user
        if labels:
            config["Labels"] = labels
        image_config = {
            "created": CREATED, "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": "scripts/node/oci_image.py"}
                        for _ in layers],
        }
        cdigest, csize = put_bytes(json.dumps(image_config, sort_keys=True).encode())
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                    "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{cdigest}",
                               "size": csize},
                    "layers": layer_descs}
        mdigest, msize = put_bytes(json.dumps(manifest, sort_keys=True).encode())
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": f"sha256:{mdigest}", "size": msize,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag}}]}
        (root / "index.json").write_text(json.dumps(index, sort_keys=True))
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        partial = out.with_name(out.name + ".tmp")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 946684800, 0, 0, "", ""
                if info.isfile():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        partial.replace(out)
        return f"sha256:{mdigest}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="full image name, e.g. docker.io/x/y:tag")
    ap.add_argument("--layer", action="append", default=[], type=Path,
                    help="an uncompressed layer tar (repeatable, bottom first)")
    ap.add_argument("--file", action="append", default=[],
                    help="DEST=SRC[:MODE]: one more layer holding this file (repeatable)")
    ap.add_argument("--cmd", nargs="+")
    ap.add_argument("--entrypoint", nargs="+")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--workdir")
    ap.add_argument("--user")
    ap.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    ap.add_argument("-o", "--output", required=True, type=Path)
    args = ap.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.output.parent, prefix=".files-") as tmp:
        layers = list(args.layer)
        if args.file:
            layers.append(_layer_from_files(args.file, Path(tmp)))
        digest = build(args.name, layers, args.output, cmd=args.cmd, entrypoint=args.entrypoint,
                       env=args.env, workdir=args.workdir, user=args.user,
                       labels=dict(lbl.split("=", 1) for lbl in args.label))
    print(digest)


if __name__ == "__main__":
    main()
