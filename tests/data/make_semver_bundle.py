"""How tests/data/semver.bundle was made: three consecutive semver releases, one commit each.

    python tests/data/make_semver_bundle.py DOWNLOADS OUT.bundle

DOWNLOADS holds the sdists, fetched with
``pip download --no-deps --no-binary :all: semver==3.0.0`` (and 3.0.1, 3.0.2; 3.0.3's sdist
ships no tests). Each release's source tree becomes one commit (tag vX.Y.Z) with the release's
date, without docs/ (400 kB of Sphinx sources) and the generated PKG-INFO / egg-info.
semver is BSD-3-Clause (tests/data/semver-LICENSE.txt), by its authors, not by patchgate's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

RELEASES = (
    ("3.0.0", "2023-04-02T12:00:00+00:00"),
    ("3.0.1", "2023-06-14T12:00:00+00:00"),
    ("3.0.2", "2023-10-09T12:00:00+00:00"),
)
DROPPED = ("docs", "PKG-INFO", "src/semver.egg-info")


def git(repo: str, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(("git", "-C", repo, *args), check=True, env=env)


def main(downloads: str, out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "semver")
        os.makedirs(repo)
        git(repo, "init", "-q", "-b", "main")
        for version, date in RELEASES:
            for entry in os.listdir(repo):
                if entry != ".git":
                    path = os.path.join(repo, entry)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            with tarfile.open(os.path.join(downloads, f"semver-{version}.tar.gz")) as tar:
                tar.extractall(tmp, filter="data")
            source = os.path.join(tmp, f"semver-{version}")
            for name in DROPPED:
                path = os.path.join(source, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            shutil.copytree(source, repo, dirs_exist_ok=True)
            shutil.rmtree(source)
            env = {
                **os.environ,
                "GIT_AUTHOR_NAME": "python-semver maintainers",
                "GIT_AUTHOR_EMAIL": "semver@pypi.invalid",
                "GIT_COMMITTER_NAME": "python-semver maintainers",
                "GIT_COMMITTER_EMAIL": "semver@pypi.invalid",
                "GIT_AUTHOR_DATE": date,
                "GIT_COMMITTER_DATE": date,
            }
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"semver {version} (sdist from PyPI)", env=env)
            git(repo, "tag", f"v{version}")
        git(repo, "bundle", "create", os.path.abspath(out), "--all")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
