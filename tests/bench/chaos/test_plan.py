"""The fault schedule: the same seed gives the same run, every kind of fault comes at least once,
and faults overlap."""

from __future__ import annotations

from bridge.bench.chaos.plan import KINDS, PROFILES, schedule


def test_a_seed_gives_one_schedule_and_another_seed_another() -> None:
    short = PROFILES["short"]
    assert schedule(short, 7) == schedule(short, 7)
    assert schedule(short, 7) != schedule(short, 8)


def test_every_kind_comes_and_faults_overlap() -> None:
    for profile in PROFILES.values():
        faults = schedule(profile, 3)
        assert {f.kind for f in faults} == set(KINDS)
        assert all(0 < f.at < profile.duration - 15 for f in faults)
        assert [f.at for f in faults] == sorted(f.at for f in faults)
        assert any(a.at + a.seconds > b.at for a, b in zip(faults, faults[1:])), "no overlap"
        assert all(0 <= f.target < profile.instances for f in faults
                   if f.kind.startswith("instance_"))
