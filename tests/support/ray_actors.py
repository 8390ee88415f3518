"""Actors for the Ray engine's fault tests (shipped to the workers by value)."""

import os
from pathlib import Path

from ra_lite.on_ray.actor import JudgeActor


class CrashOnceActor(JudgeActor):
    """Kills its own process in the middle of its first block, once per marker file: the way
    a native crash in llama.cpp would end an actor."""

    marker = os.environ.get("RA_LITE_TEST_CRASH_MARKER", "")

    def __call__(self, batch):
        marker = Path(self.marker)
        if self.marker and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)
