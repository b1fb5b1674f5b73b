"""What Streamlit Community Cloud reads from the repository: config, requirements, entry point.

Nothing here starts a server; the browser tests do. These catch the mistakes that only show
once deployed: a misspelt config option (Streamlit ignores unknown ones silently), an
unpinned or missing requirement, a page file that was renamed, a committed secret.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def test_every_config_option_is_one_streamlit_knows():
    from streamlit import config

    options = config.get_config_options()
    unknown = [name for name in _flatten(_config()) if name not in options]
    assert unknown == []


def test_config_values_the_deployment_relies_on():
    flat = _flatten(_config())
    # The app refuses larger uploads with its own message; the server must agree.
    assert flat["server.maxUploadSize"] == 10
    assert flat["server.headless"] is True
    # A session's start pays for the watcher's scan of every loaded module (docs/benchmarks.md).
    assert flat["server.fileWatcherType"] == "none"
    assert flat["theme.base"] in ("dark", "light")
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", flat["theme.primaryColor"])
    assert flat["browser.gatherUsageStats"] is False


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_pin_every_package_and_include_the_chosen_stack():
    names = set()
    for line in _requirements():
        spec, _, marker = line.partition(";")
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.\-]*", spec.strip()), line
        names.add(spec.split("==")[0].strip().lower())
    assert {"streamlit", "plotly", "ccxt", "pandas", "prophet", "ta", "keras"} <= names
    # TensorFlow: the CPU build on Linux (the cloud), the full one elsewhere, never both.
    tf_lines = [line for line in _requirements() if line.startswith("tensorflow")]
    assert sorted(line.split("==")[0] for line in tf_lines) == ["tensorflow", "tensorflow-cpu"]
    assert any('sys_platform == "linux"' in line for line in tf_lines)
    assert any('sys_platform != "linux"' in line for line in tf_lines)


def test_installed_versions_match_the_pins():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    wrong = []
    for line in _requirements():
        spec, _, marker = line.partition(";")
        name, pinned = (part.strip() for part in spec.split("=="))
        if marker and not Marker(marker.strip()).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if installed != pinned:
            wrong.append(f"{name} {installed} installed, {pinned} pinned")
    assert wrong == []


def test_entry_point_and_pages_exist():
    app = (ROOT / "app.py").read_text()
    pages = re.findall(r'st\.Page\("([^"]+)"', app)
    assert [Path(page).stem for page in pages] == [
        "data",
        "features",
        "models",
        "compare",
        "strategy",
        "tuning",
        "sweeps",
        "live",
    ]
    for page in pages:
        assert (ROOT / page).is_file(), page


def test_secrets_are_ignored_and_not_committed():
    try:
        tracked = subprocess.run(
            ["git", "ls-files", ".streamlit"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert ".streamlit/secrets.toml" not in tracked
    assert ".streamlit/secrets.toml.example" in tracked
    assert ".streamlit/secrets.toml" in (ROOT / ".gitignore").read_text().splitlines()
