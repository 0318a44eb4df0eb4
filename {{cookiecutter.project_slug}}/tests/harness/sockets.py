"""A stand-in for the server's synchronous write, for tests of what a session writes when."""


class Socket:
    """Takes frames while `open`, and records each write."""

    def __init__(self) -> None:
        self.open = True
        self.writes: list[tuple[str, ...]] = []

    def write_now(self, frames: tuple[str, ...]) -> bool:
        if self.open:
            self.writes.append(frames)
        return self.open

    @property
    def written(self) -> list[str]:
        """Every frame written, in order."""
        return [frame for frames in self.writes for frame in frames]
