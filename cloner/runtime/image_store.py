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
from cloner.engines import Placement, available_engines, get_engine
from cloner.errors import ImageError
from cloner.logging import get_logger
from cloner.runtime.docker import DockerRuntime

log = get_logger(__name__)

#: Engines that run in a container and so need an image (sqlite does not).
CONTAINER_ENGINES = tuple(
    e for e in available_engines() if get_engine(e).placement is Placement.CONTAINER
)
#: Container engines without an offline recipe (Debian ships no such server), with the
#: setting that names their image: used when present or pullable, never built.
NO_OFFLINE_RECIPE: dict[Engine, str] = {Engine.MONGODB: "CLONER_MONGO_IMAGE"}

_build_lock = asyncio.Lock()


@dataclass(frozen=True)
class ImageOutcome:
    """What ``ensure`` did for one engine."""

    engine: str
    image: str
    action: str  # present | pulled | built | skipped
    seconds: float
    #: Why an engine was skipped (one line), else None.
    note: str | None = None


async def ensure_image(
    runtime: DockerRuntime, engine: Engine, image: str, *, pull_timeout_s: float,
    work_dir: Path, skip_unbuildable: bool = False,
) -> ImageOutcome:
    """Make ``image`` present for ``engine``; raise ``ImageError`` if impossible.

    An engine in ``NO_OFFLINE_RECIPE`` whose image is neither present nor
    pullable is an error, or, with ``skip_unbuildable`` (``ensure`` without
    ``--engine``), an outcome ``skipped`` whose note says what to do.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    if await runtime.image_exists(image):
        return ImageOutcome(engine.value, image, "present", loop.time() - started)
    try:
        await runtime.pull(image, pull_timeout_s)
        return ImageOutcome(engine.value, image, "pulled", loop.time() - started)
    except ImageError as exc:
        if engine in NO_OFFLINE_RECIPE:
            log.info("images.pull_failed_no_offline_recipe", image=image, error=exc.message)
            message = (
                f"no offline recipe for {engine.value}: Debian ships no {engine.value} server "
                f"and {image} is neither present nor pullable; 'docker load' an image and name "
                f"it with {NO_OFFLINE_RECIPE[engine]}"
            )
            if not skip_unbuildable:
                raise ImageError(message) from exc
            return ImageOutcome(engine.value, image, "skipped", loop.time() - started, message)
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
