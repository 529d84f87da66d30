"""Where this host's replica processes run: a command prefix, environment and config overrides
per place, chosen by whoever starts the launcher. The launcher applies them and knows nothing
else: ``tenacia chaos link`` puts replica k in network namespace k this way (prefix ``ip netns
exec NS``, env ``GLOO_SOCKET_IFNAME``, override ``replicas.host=<the namespace's address>``).

Contract:
- ``PLACEMENT_ENV`` names a JSON file ``{"places": [{"prefix": [...], "env": {...},
  "overrides": [...]}, ...]}``; without it every replica runs as a plain child (``Placement.none``).
- The i-th replica of this host (replica id ``first_id + i``) runs at place ``i % len(places)``,
  every time it is (re)started: a replica keeps its place for the whole run.
- A replica started under a placement is a new process in its place, never a fork of the warm
  spare (a fork would inherit the spare's place): the launcher keeps no spare then.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...config import ConfigError

PLACEMENT_ENV = "TENACIA_PLACEMENT"


@dataclass(frozen=True, slots=True)
class Place:
    prefix: tuple[str, ...] = ()  # argv the replica's command is run under
    env: dict[str, str] = field(default_factory=dict)  # added to the replica's environment
    overrides: tuple[str, ...] = ()  # extra ``-o a.b=value`` for the replica's config


@dataclass(frozen=True, slots=True)
class Placement:
    places: tuple[Place, ...] = ()

    @staticmethod
    def none() -> Placement:
        return Placement()

    @staticmethod
    def from_env(environ: dict[str, str] | None = None) -> Placement:
        """The placement ``PLACEMENT_ENV`` names, or none; a bad file raises ``ConfigError``."""
        path = (os.environ if environ is None else environ).get(PLACEMENT_ENV)
        return Placement.none() if not path else Placement.load(Path(path))

    @staticmethod
    def load(path: Path) -> Placement:
        try:
            data = json.loads(path.read_text())
            places = tuple(Place(tuple(p.get("prefix", ())), {str(k): str(v) for k, v in p.get("env", {}).items()},
                                 tuple(p.get("overrides", ()))) for p in data["places"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(PLACEMENT_ENV, str(path),
                              'a readable JSON file {"places": [{"prefix": [..], "env": {..}, "overrides": [..]}]}'
                              f" ({type(e).__name__}: {e})") from None
        return Placement(places)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"places": [{"prefix": list(p.prefix), "env": p.env, "overrides": list(p.overrides)}
                                               for p in self.places]}, indent=1))

    def __bool__(self) -> bool:
        return bool(self.places)

    def place(self, index: int) -> Place:
        """The place of this host's ``index``-th replica (a plain child when there is no placement)."""
        return self.places[index % len(self.places)] if self.places else Place()

    def command(self, index: int, cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """``cmd`` and ``env`` of this host's ``index``-th replica, placed."""
        p = self.place(index)
        extra = [a for o in p.overrides for a in ("-o", o)]
        return [*p.prefix, *cmd, *extra], {**env, **p.env}
