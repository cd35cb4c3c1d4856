"""The per-channel status-edit pacer (bot/edit_pacing.py, issue #14 defect 16), with a fake clock."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from bot.edit_pacing import EditPacer, PacingRules, worker_gone_quiet

CHANNEL = 111
RULES = PacingRules(channel_edits=3, channel_window=5.0, song_interval=3.0)


def max_in_any_window(times: list[float], window: float) -> int:
    """The most edits in any half-open window [t, t + window) (the sliding-window worst case)."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def simulate(
    pacer: EditPacer,
    songs: dict[int, int],
    seconds: float,
    change_every: float,
    step: float = 0.1,
    stop_changing_at: float | None = None,
) -> tuple[dict[int, list[float]], dict[int, int], dict[int, int]]:
    """Each song's state changes every `change_every` s (version counter); every `step` the
    refresher edits what is due, rendering the version current at that moment.
    Returns edit times per channel, the last version shown per song, the last version per song."""
    edits: dict[int, list[float]] = defaultdict(list)
    shown: dict[int, int] = {}
    version: dict[int, int] = dict.fromkeys(songs, 0)
    rng = random.Random(7)
    next_change = {s: rng.uniform(0, change_every) for s in songs}
    t = 0.0
    while t <= seconds:
        for song, channel in songs.items():
            if (stop_changing_at is None or t < stop_changing_at) and t >= next_change[song]:
                version[song] += 1
                next_change[song] += change_every
                pacer.want(song, channel, t)
        for song in pacer.due(t):
            edits[songs[song]].append(t)
            shown[song] = version[song]
        t = round(t + step, 6)
    return edits, shown, version


def test_ten_songs_in_one_channel_for_a_minute_stay_within_the_budget() -> None:
    pacer = EditPacer(RULES)
    songs = {s: CHANNEL for s in range(10)}
    edits, shown, version = simulate(pacer, songs, 80.0, change_every=0.5, stop_changing_at=60.0)
    times = edits[CHANNEL]
    assert max_in_any_window(times, 5.0) <= 3
    assert max_in_any_window(times, 5.0) == 3  # the budget is used, not wasted
    # Every song got turns (none starved), and each one's final state was shown.
    assert shown == version
    assert all(v > 0 for v in shown.values())


def test_songs_sharing_a_channel_take_turns() -> None:
    pacer = EditPacer(RULES)
    order: list[int] = []
    t = 0.0
    while t < 30:
        for song in range(6):
            pacer.want(song, CHANNEL, t)  # every song always has something new
        order.extend(pacer.due(t))
        t = round(t + 0.1, 6)
    # Round robin: in every run of 6 consecutive grants, each song appears once.
    for i in range(0, len(order) - 6, 6):
        assert sorted(order[i : i + 6]) == list(range(6)), order[i : i + 6]


def test_a_song_alone_gets_its_edits_at_its_own_rate() -> None:
    pacer = EditPacer(PacingRules(channel_edits=3, channel_window=5.0, song_interval=2.0))
    edits, shown, version = simulate(pacer, {1: CHANNEL}, 20.0, change_every=0.25, stop_changing_at=17.0)
    assert shown == version
    times = edits[CHANNEL]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 2.0 - 1e-9
    assert max(gaps) <= 2.0 + 0.1 + 1e-9  # no slower than its interval while it keeps changing
    assert max_in_any_window(times, 5.0) <= 3


def test_channels_have_their_own_budgets() -> None:
    pacer = EditPacer(RULES)
    songs = {s: 100 + s % 3 for s in range(9)}  # three channels, three songs each
    edits, shown, version = simulate(pacer, songs, 30.0, change_every=0.3, stop_changing_at=25.0)
    for channel in (100, 101, 102):
        assert max_in_any_window(edits[channel], 5.0) == 3
    assert shown == version


def test_a_pending_edit_is_replaced_not_queued() -> None:
    pacer = EditPacer(RULES)
    pacer.want(1, CHANNEL, 0.0)
    assert pacer.due(0.0) == [1]
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):  # five changes while the song must wait
        pacer.want(1, CHANNEL, t)
        assert pacer.due(t) == []
    assert pacer.due(3.0) == [1]  # one edit (rendering the latest state), not five
    assert pacer.due(6.0) == []
    assert pacer.pending() == set()


def test_next_due_at_says_how_long_to_sleep() -> None:
    pacer = EditPacer(RULES)
    assert pacer.next_due_at(0.0) is None
    pacer.want(1, CHANNEL, 0.0)
    assert pacer.next_due_at(0.0) == 0.0
    pacer.due(0.0)
    pacer.want(1, CHANNEL, 0.2)
    assert pacer.next_due_at(0.2) == pytest.approx(3.0)  # the song's own interval
    for song in (2, 3):
        pacer.want(song, CHANNEL, 0.3)
    assert pacer.due(0.3) == [2, 3]  # the channel's budget (3) is now used up
    pacer.want(4, CHANNEL, 0.4)
    assert pacer.next_due_at(0.4) == pytest.approx(5.0)  # the first edit leaves the window
    assert pacer.due(4.9) == []
    assert pacer.due(5.0) == [4]  # never edited before song 1 (edited at 0.0)
    assert pacer.due(5.0) == []
    assert pacer.due(5.4) == [1]


def test_messages_sent_outside_the_pacer_use_up_the_channel_budget() -> None:
    pacer = EditPacer(RULES)
    pacer.sent(None, CHANNEL, 0.0)  # e.g. the drafts message
    pacer.sent(7, CHANNEL, 0.0)  # an edit made at once in answer to a click
    pacer.want(7, CHANNEL, 0.1)
    pacer.want(8, CHANNEL, 0.1)
    assert pacer.due(0.1) == [8]  # one slot left; song 7 also waits for its interval
    assert pacer.due(3.0) == []  # song 7's interval passed, but the channel is full until 5.0
    assert pacer.due(5.0) == [7]


def test_forget_drops_a_pending_edit() -> None:
    pacer = EditPacer(RULES)
    pacer.want(1, CHANNEL, 0.0)
    pacer.forget(1)
    assert pacer.due(0.0) == []
    assert pacer.next_due_at(0.0) is None


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        PacingRules(channel_edits=0)


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("silent_for", "quiet"),
    [(0.0, False), (60.0, False), (90.0, False), (90.5, True), (300.0, True)],
)
def test_a_worker_is_quiet_after_three_missed_heartbeats(silent_for: float, quiet: bool) -> None:
    assert worker_gone_quiet(NOW - timedelta(seconds=silent_for), 30.0, NOW) is quiet


def test_naive_heartbeats_are_utc_and_none_is_not_quiet() -> None:
    naive = (NOW - timedelta(seconds=100)).replace(tzinfo=None)
    assert worker_gone_quiet(naive, 30.0, NOW)
    assert not worker_gone_quiet(NOW.replace(tzinfo=None), 30.0, NOW)
    assert not worker_gone_quiet(None, 30.0, NOW)
    assert worker_gone_quiet(NOW - timedelta(seconds=11), 5.0, NOW, missed=2)
    with pytest.raises(ValueError, match="positive"):
        worker_gone_quiet(NOW, 0, NOW)
