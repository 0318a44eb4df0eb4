"""Who may use which channel: the per-channel authorization hook.

Channels named `user:<id>` are personal: only that user may join or publish there. Every other
channel is public. Extend `may_use` when your service needs finer rules.
"""

PERSONAL_PREFIX = "user:"


def personal_channel(user_id: str) -> str:
    """The channel only `user_id` may use."""
    return PERSONAL_PREFIX + user_id


def may_use(user_id: str, channel: str) -> bool:
    """Whether `user_id` may subscribe or publish to `channel`."""
    if channel.startswith(PERSONAL_PREFIX):
        return channel == personal_channel(user_id)
    return True
