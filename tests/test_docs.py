"""README and docs/ against the repository: every link resolves, and docs/files.md lists every file.

The file list is the map a new reader follows; a file added, moved or removed without it
changing fails here, in the fast tier.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTED_FOLDERS = ("src/", "tests/", "scripts/", "notebooks/")


def _tracked_files() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {path for path in (listed + untracked).split() if (ROOT / path).is_file()}


def _files_page_entries() -> list[str]:
    block = (ROOT / "docs" / "files.md").read_text().split("```")[1]
    return [line.split()[0] for line in block.strip().splitlines() if line.strip()]


def test_every_file_is_listed_once_and_every_listed_file_exists():
    entries = _files_page_entries()
    assert len(entries) == len(set(entries)), "a file is listed twice in docs/files.md"
    for entry in entries:
        assert (ROOT / entry).exists(), f"docs/files.md lists {entry}, which does not exist"
    folders = tuple(entry for entry in entries if entry.endswith("/"))
    for path in sorted(_tracked_files()):
        if path.startswith(LISTED_FOLDERS):
            assert path in entries or path.startswith(folders), f"{path} is missing from docs/files.md"


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, and a
    heading seen before gets -1, -2, ... (fenced code is not headings)."""
    anchors: set[str] = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, seen = slug, 0
        while anchor in anchors:
            seen += 1
            anchor = f"{slug}-{seen}"
        anchors.add(anchor)
    return anchors


def test_every_link_in_readme_and_docs_resolves():
    """Every relative link names a file that exists, and its #anchor, where it has one, a heading of that page."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")) or not (target or anchor):
                continue
            linked = page.parent / target if target else page
            assert linked.exists(), f"{page.relative_to(ROOT)} links to {target}, which is missing"
            if anchor and linked.suffix == ".md":
                where = f"{page.relative_to(ROOT)} links to {target}#{anchor}"
                assert anchor in _anchors(linked), f"{where}: no such heading"
