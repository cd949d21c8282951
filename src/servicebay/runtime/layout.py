"""Where the run engine keeps its files under `BAY_HOME`.

Bundles are stored by digest (the same folder deployed twice is kept once), sources by
deployment and version, environments by the digest of their requirements (a redeploy
with unchanged requirements reuses its environment), and each run gets a private
working directory whose `output/` becomes the run's artifacts; a server's version
is built once into a folder of its own that all its processes work in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "runtime"

    def bundle(self, digest: str) -> Path:
        return self.root / "bundles" / f"{digest}.tar.gz"

    def source(self, deployment: str, version: int) -> Path:
        return self.root / "deployments" / deployment / f"v{version}"

    def environment(self, requirements_digest: str) -> Path:
        return self.root / "environments" / requirements_digest

    def server_dir(self, deployment: str, version: int) -> Path:
        """A server version's own copy of its source, built once (its build command ran
        there) and the working directory of every process of that version."""
        return self.root / "servers" / deployment / f"v{version}"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def artifacts(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "output"

    @property
    def sdk(self) -> Path:
        """The staged SDK that scripts import (`runtime.sdk_stage`)."""
        return self.root / "sdk"
