"""Progress bars: quiet when disabled, and a shown bar ends on its final count."""

from __future__ import annotations

import io

from dcsi._progress import progress, set_progress


def test_shown_bar_draws_its_last_frame_on_close():
    set_progress(True)
    try:
        out = io.StringIO()
        with progress(desc="work", total=50, file=out, delay=0, mininterval=60) as bar:
            for _ in range(50):
                bar.update(1)
        assert "50/50" in out.getvalue() and "100%" in out.getvalue()
    finally:
        set_progress(None)


def test_disabled_bar_prints_nothing():
    set_progress(False)
    try:
        out = io.StringIO()
        for _ in progress(range(5), desc="quiet", file=out, delay=0):
            pass
        assert out.getvalue() == ""
    finally:
        set_progress(None)
