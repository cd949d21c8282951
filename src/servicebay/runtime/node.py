"""The background parts of a node, by role: the scheduler and the run workers.

`bay serve --role` picks them: `all` (the default, one process does everything), `api`
(HTTP only), `scheduler`, `worker`. Every role also serves HTTP, so each process has
its health checks and metrics; put only `api` nodes behind the load balancer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    all = "all"
    api = "api"
    scheduler = "scheduler"
    worker = "worker"

    def runs(self, part: Role) -> bool:
        """Whether a node of this role runs `part` (`scheduler` or `worker`)."""
        return self in (Role.all, part)


class Component(Protocol):
    """Something a node starts with the server and stops before it exits."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Node:
    """Starts its components in order and stops them in reverse."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components
        self._started: list[Component] = []

    async def start(self) -> None:
        for component in self.components:
            await component.start()
            self._started.append(component)

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()
