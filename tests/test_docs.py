"""The README and the install script point only at things that exist (issue 13: .ci/install cited a README
section that did not exist, and the README cited files outside the repository)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_links_and_paths_exist():
    text = (ROOT / "README.md").read_text()
    assert "shared/" not in text  # the team's shared notes are not part of the repository
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):  # markdown links and images
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_install_script_cites_no_missing_readme_section():
    script = (ROOT / ".ci" / "install").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#+\s*(.+)$", (ROOT / "README.md").read_text(), re.M)}
    for cited in re.findall(r"README: ([\w -]+)", script):
        assert cited.strip().lower() in headings, cited
