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


def test_every_link_in_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which is missing"
