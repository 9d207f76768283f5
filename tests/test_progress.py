"""blur_tf.progress: a bar with rate and time left on a terminal, nothing added elsewhere."""

import fcntl
import io
import logging
import os
import re
import select
import struct
import termios

from blur_tf.progress import Progress, is_terminal


def _read_all(fd) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_not_a_terminal_draws_nothing_and_leaves_the_log_handlers():
    stream, out = io.StringIO(), io.StringIO()
    handlers = list(logging.getLogger().handlers)
    assert not is_terminal(stream)
    with Progress("meta-step", stream=stream) as progress:
        assert not progress.enabled
        progress.update(1, 4)
        assert logging.getLogger().handlers == handlers
        progress.update(4, 4)
        progress.print("| a | b |", file=out)
    assert stream.getvalue() == "" and out.getvalue() == "| a | b |\n"


def test_terminal_shows_count_rate_and_time_left_with_log_lines_above_the_bar():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    root = logging.getLogger()
    handlers = list(root.handlers)
    with os.fdopen(slave, "w") as terminal:
        assert is_terminal(terminal)
        handler = logging.StreamHandler(terminal)
        handler.setFormatter(logging.Formatter("LOG %(message)s"))
        root.addHandler(handler)
        try:
            with Progress("meta-step", "meta_train", stream=terminal) as progress:
                assert progress.enabled
                progress.update(3, 10)  # a run resumed at meta-step 2: the bar starts at 2
                progress.update(5, 10)
                logging.getLogger("blur_tf.test").warning("meta-step 5/10 loss 0.1")
                progress.update(6, 10)
                assert handler not in root.handlers  # wrapped while the bar is shown
            assert root.handlers == handlers + [handler]
        finally:
            root.removeHandler(handler)
        output = _read_all(master)
    os.close(master)
    assert "meta_train" in output and "6/10" in output
    assert "meta-step/s" in output or "s/meta-step" in output  # the rate
    assert "<" in output and "60%" in output  # elapsed<left and the fraction
    # The log line is on a line of its own: the bar is cleared (blanks) before it and drawn
    # again after it, not glued to it.
    assert re.search(r"\r +\rLOG meta-step 5/10 loss 0\.1\r?\n\rmeta_train:", output), output
