#!/usr/bin/env python3
"""Removes the workspace's build artefacts that the run which just ended did not write.

Usage: prune-target.py TARGET_DIR STARTED_FILE

A fresh clone rebuilds every workspace crate, and each build of a crate whose features or
dependency versions changed gets a new hash; the old test binaries (300-400 MB each) are never
used again but stay in the shared cache. On 2026-12-06 they filled the disk in one day and the
next run's linker died with a bus error. Third-party artefacts are kept: they are what the cache
is for. Anything of the workspace older than STARTED_FILE is stale for this clone; if another
checkout still needs it, cargo sees it missing and rebuilds it.
"""
import json
import os
import re
import shutil
import subprocess
import sys

target, started_file = sys.argv[1], sys.argv[2]
started = os.stat(started_file).st_mtime
metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
)
names = {t["name"].replace("-", "_") for p in metadata["packages"] for t in p["targets"]}
names |= {p["name"] for p in metadata["packages"]}  # .fingerprint and build/ use the package name
artefact = re.compile(r"^(?:lib)?(?P<name>[A-Za-z0-9_-]+?)-[0-9a-f]{16}(?:\..*)?$")

freed = 0
for profile in ("debug", "release"):
    for sub in ("deps", "examples", ".fingerprint", "build"):
        folder = os.path.join(target, profile, sub)
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            m = artefact.match(entry.name)
            if not m or m.group("name") not in names:
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
            if entry.is_dir(follow_symlinks=False):
                freed += sum(
                    os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(entry.path) for f in fs
                )
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                freed += entry.stat(follow_symlinks=False).st_size
                os.remove(entry.path)
print(f"== pruned {freed / 2**30:.1f} GiB of stale workspace artefacts from {target}")
