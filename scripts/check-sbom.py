#!/usr/bin/env python3
"""Checks the shape of the server binary's CycloneDX SBOM, and writes it where it belongs.

Usage: check-sbom.py <sbom made in a copy of the workspace> <that copy's root> <the clone's root> <output>

Called by scripts/security-checks.sh. cargo-cyclonedx ran on a copy of the tracked files (it
writes next to the manifest, and nothing is written into the clone), so the copy's path in the
components' references is put back to the clone's before the SBOM is written to <output>.
"""

import json
import pathlib
import sys

# Crates the binary must contain: the workspace's libraries and the ones it is built on.
REQUIRED = {"bp-core", "bp-storage", "bp-notify", "tokio", "axum", "rustls", "rusqlite", "serde"}
# Dev-dependencies only: their presence would mean the SBOM is of the wrong tree.
DEV_ONLY = {"proptest", "wiremock"}


def main() -> int:
    made, copy_root, clone_root, output = sys.argv[1:5]
    text = pathlib.Path(made).read_text()
    text = text.replace(str(pathlib.Path(copy_root).resolve()), str(pathlib.Path(clone_root).resolve()))
    bom = json.loads(text)

    problems = []
    if bom.get("bomFormat") != "CycloneDX" or not str(bom.get("specVersion", "")).startswith("1."):
        problems.append(f"not a CycloneDX 1.x document: bomFormat={bom.get('bomFormat')!r} specVersion={bom.get('specVersion')!r}")
    subject = bom.get("metadata", {}).get("component", {})
    if subject.get("name") != "bp-server-example" or subject.get("type") != "application":
        problems.append(f"its subject is not the bp-server-example application: {subject.get('name')!r} {subject.get('type')!r}")
    components = bom.get("components", [])
    names = {c.get("name") for c in components}
    if len(components) < 100:
        problems.append(f"only {len(components)} components: the server has hundreds of dependencies")
    if REQUIRED - names:
        problems.append(f"components missing: {sorted(REQUIRED - names)}")
    if DEV_ONLY & names:
        problems.append(f"dev-dependencies listed as parts of the binary: {sorted(DEV_ONLY & names)}")
    incomplete = [c.get("bom-ref", "?") for c in components if not (c.get("name") and c.get("version") and c.get("purl"))]
    if incomplete:
        problems.append(f"components without a name, version or purl: {incomplete[:5]}")
    unlicensed = [c["name"] for c in components if not c.get("licenses")]
    if unlicensed:
        problems.append(f"components without a licence: {unlicensed[:5]}")
    if not bom.get("dependencies"):
        problems.append("no dependency graph")

    if problems:
        for p in problems:
            print(f"SBOM check: {p}", file=sys.stderr)
        return 1
    out = pathlib.Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bom, indent=2) + "\n")
    print(f"SBOM: {out} (CycloneDX {bom['specVersion']}, {len(components)} components, {subject['name']} {subject.get('version')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
