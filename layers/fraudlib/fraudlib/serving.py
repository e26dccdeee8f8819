"""The served model in a long-lived process: loaded once, swapped whole when a new champion
is promoted, never half-loaded.

A Lambda execution environment keeps module state between requests. :class:`ChampionHolder`
keeps the loaded model there and looks at the champion pointer at most every
``check_interval_s`` seconds (one cheap HEAD: the pointer's ETag). When the ETag changed it
loads the new bundle beside the old model and swaps it in with one assignment, so a request
that already took the old model finishes on it. A pointer to a bundle that cannot be loaded
is logged and remembered; the holder keeps serving what it has and tries again only when the
pointer changes.

No AWS here: the bundle comes through :class:`BundleSource` (S3 in ``fraudlib.store``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from fraudlib.layout import EXPLAIN_ONNX_FILENAME, MANIFEST_FILENAME, ONNX_FILENAME, PREPROCESSING_FILENAME
from fraudlib.model import FraudModel
from fraudlib.pointer import ChampionPointer

log = logging.getLogger(__name__)

REQUIRED_BUNDLE_FILES = (ONNX_FILENAME, PREPROCESSING_FILENAME, MANIFEST_FILENAME)
OPTIONAL_BUNDLE_FILES = (EXPLAIN_ONNX_FILENAME,)


class BundleSource(Protocol):
    """Where the pointer and the bundles are (the artifacts bucket)."""

    def champion_pointer_etag(self) -> str | None:
        """The pointer's current ETag, or None while no model is promoted. Cheap."""

    def champion_pointer_with_etag(self) -> tuple[ChampionPointer, str] | None:
        """The pointer and the ETag of exactly the version read."""

    def bundle_files(self, model_version: str, names: tuple[str, ...]) -> dict[str, bytes | None]:
        """The named files of a bundle; None for a file that does not exist."""


class BundleError(RuntimeError):
    """A bundle that cannot be served (missing files, bad manifest, graph that won't load)."""


def load_bundle(source: BundleSource, pointer: ChampionPointer, threads: int = 1) -> FraudModel:
    files = source.bundle_files(pointer.model_version, REQUIRED_BUNDLE_FILES + OPTIONAL_BUNDLE_FILES)
    missing = [name for name in REQUIRED_BUNDLE_FILES if files.get(name) is None]
    if missing:
        raise BundleError(f"bundle {pointer.bundle_prefix} has no {', '.join(missing)}")
    try:
        model = FraudModel.from_bundle_files(
            files[ONNX_FILENAME],  # type: ignore[arg-type]
            files[PREPROCESSING_FILENAME],  # type: ignore[arg-type]
            files[MANIFEST_FILENAME],  # type: ignore[arg-type]
            files.get(EXPLAIN_ONNX_FILENAME),
            threads,
        )
    except Exception as exc:  # onnxruntime, json and the manifest raise many kinds
        raise BundleError(f"bundle {pointer.bundle_prefix} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if model.model_version != pointer.model_version:
        raise BundleError(
            f"bundle {pointer.bundle_prefix} holds model {model.model_version}, the pointer says"
            f" {pointer.model_version}"
        )
    return model


@dataclass(frozen=True)
class LoadedModel:
    model: FraudModel
    loaded_at: datetime
    pointer_etag: str


@dataclass(frozen=True)
class HolderStatus:
    model_version: str | None
    loaded_at: str | None
    pointer_checked_at: str | None
    last_error: str | None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


class ChampionHolder:
    """The model a process serves. Thread-safe: one thread refreshes, the others keep
    serving the model they have meanwhile."""

    def __init__(
        self,
        source: BundleSource,
        check_interval_s: float,
        *,
        threads: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = source
        self._check_interval_s = check_interval_s
        self._threads = threads
        self._monotonic = monotonic
        self._now = now
        self._loaded: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self._next_check = float("-inf")
        self._checked_at: datetime | None = None
        self._rejected_etag: str | None = None
        self._last_error: str | None = None

    def current(self) -> LoadedModel | None:
        """The model to answer this request with (refreshed first when the check is due).

        Take it once per request and use that object throughout: a swap never changes it.
        """
        if self._monotonic() >= self._next_check:
            self.refresh()
        return self._loaded

    def refresh(self, *, wait: bool = False) -> None:
        """Look at the pointer now and load a new champion if it changed.

        S3 errors are logged, never raised: a request must not fail because the pointer
        could not be read; the check is repeated at the next interval.
        """
        if not self._refresh_lock.acquire(blocking=wait):
            return  # another thread is refreshing; serve the current model meanwhile
        try:
            self._next_check = self._monotonic() + self._check_interval_s
            self._refresh_locked()
        except Exception as exc:  # S3 unreachable, throttled, access denied...
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("checking the champion pointer failed; serving the model loaded before")
        finally:
            self._refresh_lock.release()

    def _refresh_locked(self) -> None:
        etag = self._source.champion_pointer_etag()
        self._checked_at = self._now()
        loaded = self._loaded
        if etag is None or (loaded is not None and etag == loaded.pointer_etag) or etag == self._rejected_etag:
            return
        read = self._source.champion_pointer_with_etag()
        if read is None:
            return
        pointer, etag = read
        if loaded is not None and pointer.model_version == loaded.model.model_version:
            self._loaded = LoadedModel(loaded.model, loaded.loaded_at, etag)  # rewritten, same model
            return
        try:
            model = load_bundle(self._source, pointer, self._threads)
        except Exception as exc:
            self._rejected_etag = etag
            self._last_error = f"{pointer.model_version}: {exc}"
            log.error(
                "champion pointer names a bundle that cannot be served; keeping %s: %s",
                loaded.model.model_version if loaded else "no model",
                exc,
            )
            return
        # The swap: one assignment. Requests holding the old LoadedModel finish on it.
        self._loaded = LoadedModel(model, self._now(), etag)
        self._last_error = None
        log.info("serving model %s (was %s)", model.model_version, loaded.model.model_version if loaded else "no model")

    def status(self) -> HolderStatus:
        loaded = self._loaded
        return HolderStatus(
            model_version=None if loaded is None else loaded.model.model_version,
            loaded_at=None if loaded is None else _iso(loaded.loaded_at),
            pointer_checked_at=_iso(self._checked_at),
            last_error=self._last_error,
        )
