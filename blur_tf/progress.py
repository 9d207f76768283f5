"""Progress of long work: a bar with rate and time left when stderr is a terminal, nothing extra
otherwise (CI, `nohup`, a file: the callers' periodic log lines stay exactly as they are).

Decision: tqdm (already installed: tensorflow-datasets depends on it) rather than Keras'
`Progbar`: tqdm draws on stderr, so stdout keeps only results (tables, JSON) and can be piped;
it shows rate and time left by itself; and `tqdm.external_write_mode` lets a log line be printed
above the bar instead of being glued to it, which `Progbar` cannot do.

    with Progress("meta-step") as progress:
        trainer.train(total, progress=progress.update)   # update(done, total)
"""

from __future__ import annotations

import logging
import sys


def is_terminal(stream) -> bool:
    """True if `stream` is attached to a terminal (False for pipes, files, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A bar drawn on `stream` (default sys.stderr) only if it is a terminal; else a no-op.

    `update(done, total)` is called after each unit of work with the absolute count; the bar
    starts at the first call, so a resumed run counts from where it resumed and the rate is not
    skewed by the work done before it (or by the first call's compilation). While the bar is
    shown, every record of the root logger's handlers (absl's among them) is written above it.
    """

    def __init__(self, unit: str, description: str | None = None, stream=None):
        self.unit, self.description = unit, description
        self.stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self.stream)
        self._bar, self._handlers = None, []

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, done: int, total: int | None = None) -> None:
        """`done` units of `total` are finished (absolute counts)."""
        if not self.enabled:
            return
        if self._bar is None:
            self._open(done - 1, total)
        self._bar.update(done - self._bar.n)

    def print(self, text: str, file=None) -> None:
        """`print(text, file=file, flush=True)`, above the bar while one is shown."""
        file = sys.stdout if file is None else file
        if self._bar is None:
            print(text, file=file, flush=True)
            return
        from tqdm import tqdm  # pylint: disable=g-import-not-at-top

        with tqdm.external_write_mode(file=self.stream):
            print(text, file=file, flush=True)

    def close(self) -> None:
        """Leaves the final bar on screen and restores the log handlers."""
        if self._bar is not None:
            self._bar.close()
            root = logging.getLogger()
            for wrapper, handler in self._handlers:
                root.removeHandler(wrapper)
                root.addHandler(handler)
            self._bar, self._handlers = None, []

    def _open(self, initial: int, total: int | None) -> None:
        from tqdm import tqdm  # pylint: disable=g-import-not-at-top

        self._bar = tqdm(
            total=total,
            initial=max(initial, 0),
            unit=self.unit,
            desc=self.description,
            file=self.stream,
            dynamic_ncols=True,
        )
        root = logging.getLogger()
        for handler in list(root.handlers):
            wrapper = _AboveTheBar(handler, self.stream)
            root.removeHandler(handler)
            root.addHandler(wrapper)
            self._handlers.append((wrapper, handler))


class _AboveTheBar(logging.Handler):
    """Emits through `handler` with the bar cleared first and drawn again after."""

    def __init__(self, handler: logging.Handler, stream):
        super().__init__(handler.level)
        self.handler, self.stream = handler, stream

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm  # pylint: disable=g-import-not-at-top

        with tqdm.external_write_mode(file=self.stream):
            self.handler.handle(record)
