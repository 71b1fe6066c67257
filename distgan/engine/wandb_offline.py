"""W&B helpers that never touch the network: is this machine logged in, and to which server.

(The reader of offline `.wandb` logs that the tests use lives in tests/wandb_reader.py.)
"""

from __future__ import annotations


def logged_in() -> bool:
    """True if wandb.init would run online without prompting (env key, netrc or settings).

    Uses wandb's own lookup (so the default Forge host, WANDB_BASE_URL, settings files and
    WANDB_IDENTITY_TOKEN_FILE are handled as wandb.init handles them) with prompting,
    verification and session updates off: no network, no input, no side effects.
    A key in an invalid format counts as not logged in, since wandb.init would reject it.
    """
    from wandb.errors import AuthenticationError
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    settings = wandb_setup.singleton().settings
    try:
        auth = wbauth.authenticate_session(
            host=settings.base_url,
            source="distgan",
            prompt=False,
            verify=False,
            update_session=False,
        )
    except (AuthenticationError, ValueError):
        return False
    return auth is not None


def base_url() -> str:
    """The W&B server wandb.init would talk to (``WANDB_BASE_URL``, settings, the default)."""
    from wandb.sdk import wandb_setup

    return str(wandb_setup.singleton().settings.base_url)
