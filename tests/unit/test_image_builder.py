"""Offline image recipes: the command lines they give mmdebstrap, without building anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloner.runtime import image_builder
from cloner.runtime.image_builder import (
    BASE_RECIPES,
    IMAGES_DIR,
    POSTGRES_RECIPE,
    ImageBuildError,
    build_base_image,
)


def test_python_base_installs_python_and_venv_with_no_account_or_entrypoint() -> None:
    """The python base: python3 + python3-venv, smoke-tested venv, no user, no entrypoint."""
    argv = image_builder._base_argv("/usr/bin/mmdebstrap", BASE_RECIPES["python"],
                                    Path("/w/rootfs.tar"))

    assert argv[:3] == ["/usr/bin/mmdebstrap", "--variant=apt", "--include=python3,python3-venv"]
    assert argv[-3:] == ["bookworm", "/w/rootfs.tar",
                         f"deb {image_builder.DEBIAN_MIRROR} bookworm main"]
    hooks = " ".join(a for a in argv if a.startswith("--customize-hook="))
    assert "python3 -m venv" in hooks
    assert not any(a.startswith("--essential-hook=") for a in argv)
    assert "useradd" not in " ".join(argv) and image_builder.ENTRYPOINT_PATH not in hooks


def test_engine_and_base_builds_share_filters_and_clean_up() -> None:
    """Both kinds of build get the same dpkg path filters and the same tail."""
    base = image_builder._base_argv("mmdebstrap", BASE_RECIPES["python"], Path("/r.tar"))
    engine = image_builder._mmdebstrap_argv(
        "mmdebstrap", POSTGRES_RECIPE, IMAGES_DIR / "postgres" / "entrypoint.sh", Path("/r.tar"))

    def filters(argv: list[str]) -> set[str]:
        return {a for a in argv if a.startswith("--dpkgopt=")}

    assert filters(base) <= filters(engine)
    assert base[-6:-4] == engine[-6:-4] == [  # apt clean-up; /run is cleaned by our own hook
        engine[-6], "--skip=cleanup/run"]
    # The /run clean-up spares /run/lock always, /run/postgresql only for the engine.
    assert base[-4].endswith("! -name lock -exec rm -rf {} +")
    assert "! -name postgresql" in engine[-4]


def test_unknown_base_is_refused_with_the_known_names(tmp_path: Path) -> None:
    """An unknown base name fails before anything runs, naming the recipes that exist."""
    with pytest.raises(ImageBuildError, match=r"'ruby'.*known: python"):
        build_base_image("ruby", "x:y", work_dir=tmp_path)
    assert not any(tmp_path.iterdir())
