"""The Hugging Face cache and the hub: what is cached, what the hub lists, whether it can be reached at all.

No call here downloads weights; `plan` decides what to load and `loading` loads it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from ..errors import WeightsUnavailableError
from .sd15 import LABELS

PROBE_TIMEOUT_S = 1.5
LISTING_TIMEOUT_S = 30  # huggingface_hub sets none on API calls: a stalled hub would block forever


def cached(repo: str, rel: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, rel, revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def cached_listing(repo: str, revision: str | None, probes: list[str]) -> tuple[set[str], bool]:
    """The repo's files as far as the cache knows them, with no network call, and whether that list is complete.

    Complete: the tree listing huggingface_hub caches on a snapshot download. Otherwise: the files a cached
    snapshot holds (empty when nothing is cached).
    """
    try:
        from huggingface_hub import get_cached_repo_tree

        return {f.path for f in get_cached_repo_tree(repo, revision=revision)}, True
    except Exception:  # noqa: BLE001 - an older huggingface_hub, or no listing cached: look at the snapshot
        pass
    for probe in probes:
        found = cached(repo, probe, revision)
        if found is not None:
            snapshot = found.parents[len(Path(probe).parts) - 1]
            return {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}, False
    return set(), False


def hub_listing(name: str, repo: str, revision: str | None) -> set[str]:
    """The repo's files at `revision`, asked of the hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" at revision {revision}" if revision else ""
    try:
        info = HfApi().model_info(repo, revision=revision, timeout=LISTING_TIMEOUT_S)
    except GatedRepoError as exc:
        raise WeightsUnavailableError(f"{repo} is gated on the hub ({first_line(exc)}). Fix: accept its licence on"
                                      " its hub page and log in with `hf auth login` (or set HF_TOKEN).") from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(f"No repo {repo!r} on {endpoint()} (or it is private). Fix: check the"
                                      f" {name} id, or log in with `hf auth login` if it is yours.") from None
    except RevisionNotFoundError:
        raise WeightsUnavailableError(f"{repo} has no revision {revision!r}. Fix: give a branch, tag or commit that"
                                      f" exists, or drop {name}_revision to use main.") from None
    except network_errors() as exc:
        raise interrupted(name, repo, exc) from None
    files = {sibling.rfilename for sibling in info.siblings or []}
    if not files:
        raise WeightsUnavailableError(f"The hub lists no files for {repo}{at}. Fix: check the repo id and revision.")
    return files


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def hub_offline() -> bool:
    """Tell whether the user asked for no hub access at all."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("SDRAG_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().lower() in {"1", "true", "yes", "on"}


_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Tell whether the hub answers an HTTP request within `timeout` seconds (cached for 60 s).

    The request goes through huggingface_hub's own HTTP client, so proxies (HTTPS_PROXY, ...), certificates
    and client settings apply exactly as they will to the downloads.
    """
    url = endpoint()
    hit = _probe_cache.get(url)
    if hit and time.monotonic() - hit[0] < 60:
        return hit[1]
    result: list[bool] = []

    def probe() -> None:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(url, timeout=timeout)
            result.append(True)  # any HTTP answer, even an error status, means the hub is there
        except Exception:  # noqa: BLE001 - every transport failure means the same here: not reachable
            result.append(False)

    # Name resolution ignores timeouts, so the probe runs on a thread we stop waiting for.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    ok = bool(result and result[0])
    _probe_cache[url] = (time.monotonic(), ok)
    return ok


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP client huggingface_hub uses (httpx2, httpx or requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def network_cause(exc: BaseException) -> BaseException | None:
    """The transport failure behind `exc`, if any (loaders often wrap it in their own OSError)."""
    kinds = network_errors()
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, kinds) and not _is_offline_flag(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_offline_flag(exc: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(exc, OfflineModeIsEnabled)


def interrupted(name: str, source: str, exc: BaseException) -> WeightsUnavailableError:
    """The error for a download cut off by the network."""
    return WeightsUnavailableError(
        f"Downloading {LABELS[name]} from {source} ({endpoint()}) failed: {type(exc).__name__}: {first_line(exc)}"
        "\nFix: check the connection (behind a proxy, set HTTPS_PROXY) and run the same call again: the files that"
        " finished stay in the Hugging Face cache, so only the rest is downloaded."
    )
