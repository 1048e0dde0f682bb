"""``cloner images ensure``: make each engine image present — locally, by pull, or built offline.

An image already present under the configured tag is used as is (cached by
tag: a second run costs one inspect). Otherwise a pull is tried with a
deadline; where no registry answers, the image is built from Debian packages
(``image_builder``) and tagged with the configured name, so the rest of
cloner never knows the difference. Such images carry the label
``cloner.image.source=offline-build``.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloner.domain import Engine
from cloner.errors import ImageError
from cloner.logging import get_logger
from cloner.runtime.docker import DockerRuntime

log = get_logger(__name__)

#: Engines that run in a container (sqlite does not).
CONTAINER_ENGINES = (Engine.POSTGRES,)

_build_lock = asyncio.Lock()


@dataclass(frozen=True)
class ImageOutcome:
    """What ``ensure`` did for one engine."""

    engine: str
    image: str
    action: str  # present | pulled | built
    seconds: float


async def ensure_image(
    runtime: DockerRuntime, engine: Engine, image: str, *, pull_timeout_s: float,
    work_dir: Path,
) -> ImageOutcome:
    """Make ``image`` present for ``engine``; raise ``ImageError`` if impossible."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if await runtime.image_exists(image):
        return ImageOutcome(engine.value, image, "present", loop.time() - started)
    try:
        await runtime.pull(image, pull_timeout_s)
        return ImageOutcome(engine.value, image, "pulled", loop.time() - started)
    except ImageError as exc:
        log.info("images.pull_failed_building_offline", image=image, error=exc.message)
    from cloner.runtime.image_builder import ImageBuildError, build_offline_image

    async with _build_lock:  # two builds at once would only fight over the apt mirror
        if await runtime.image_exists(image):
            return ImageOutcome(engine.value, image, "present", loop.time() - started)
        await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_dir, prefix=f"build-{engine.value}-") as tmp:
            try:
                await asyncio.to_thread(
                    build_offline_image, engine.value, image, work_dir=Path(tmp),
                    log=lambda line: log.info("images.build", engine=engine.value, line=line),
                )
            except ImageBuildError as exc:
                raise ImageError(f"cannot build {image} offline: {exc}") from exc
    return ImageOutcome(engine.value, image, "built", loop.time() - started)
