"""One translation of Hugging Face Hub failures into RaLiteError, for every download ra-lite does
(model pulls, checkpoint snapshots for conversion, benchmark datasets)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from ra_lite.errors import RaLiteError


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at its import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def hub_errors(repo: str, *, file: str | None = None, revision: str | None = None,
               kind: str = "repository", retry: str, offline_alternative: str) -> Iterator[None]:
    """Run a huggingface_hub download; its failures become one-line errors with a fix.

    retry: the fix for transient failures (network); offline_alternative: what to do instead of
    downloading (e.g. "pass a local .jsonl path").
    """
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo}:{file}" if file else repo
    try:
        yield
    # Subclasses first: GatedRepoError is a RepositoryNotFoundError, LocalEntryNotFoundError an
    # EntryNotFoundError (it means "not cached and could not fetch", not "no such file").
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        if hub_offline() or isinstance(e, OfflineModeIsEnabled):
            raise RaLiteError(f"Hub offline mode is on (HF_HUB_OFFLINE) and {where} is not in the "
                              "local cache", f"unset HF_HUB_OFFLINE and download it once while "
                              f"online, or {offline_alternative}") from e
        raise RaLiteError(f"could not download {where} from the Hub, and it is not in the local "
                          "cache", f"check the network connection (or HF_ENDPOINT), or "
                          f"{offline_alternative}") from e
    except GatedRepoError as e:
        raise RaLiteError(f"{kind} {repo} is gated on the Hugging Face Hub",
                          "accept its terms on the Hub, then `hf auth login` (or set HF_TOKEN)") from e
    except RepositoryNotFoundError as e:
        raise RaLiteError(f"the Hub has no {kind} {repo} (or it is private)",
                          "check the id; log in with `hf auth login` if it is private") from e
    except RevisionNotFoundError as e:
        raise RaLiteError(f"{repo} has no revision {revision!r}",
                          "check the branch, tag or commit") from e
    except EntryNotFoundError as e:
        raise RaLiteError(f"{repo} has no file {file!r}", "check the file name") from e
    except RaLiteError:
        raise
    except Exception as e:   # HTTP and transport errors, after huggingface_hub's own retries
        first = str(e).splitlines()[0] if str(e) else ""
        raise RaLiteError(f"could not download {where} ({type(e).__name__}: {first})",
                          f"check the network (or HF_ENDPOINT); {retry}") from e
