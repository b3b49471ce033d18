"""CITATION.cff cites what the README's "How to cite" does, with the package's version."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_matches_the_readme_and_the_package():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    setup = (ROOT / "setup.py").read_text()
    assert f'version="{citation["version"]}"' in setup
    readme_dois = re.findall(r"doi\s*=\s*\{([^}]+)\}", (ROOT / "README.md").read_text())
    cited = [citation["preferred-citation"]["doi"]] + [reference["doi"] for reference in citation["references"]]
    assert cited == readme_dois
