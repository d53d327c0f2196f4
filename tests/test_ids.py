from __future__ import annotations

import os
import time
import uuid

import pytest

from jobadapter.ids import new_job_id


def test_job_ids_are_version_7_uuids_in_canonical_form() -> None:
    before = time.time_ns() // 1_000_000
    ids = {new_job_id() for _ in range(2000)}  # several pool refills (256 ids each)
    after = time.time_ns() // 1_000_000
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: when, in Unix ms
    for position in (15, 20, 35):  # no random position is stuck
        assert {text[position] for text in ids} == set("0123456789abcdef")
    assert {text[19] for text in ids} == set("89ab")


def test_job_ids_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(5):
        made.append(new_job_id())
        time.sleep(0.002)
    assert sorted(made) == made


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    new_job_id()  # the pool now holds bytes the child would inherit
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(reader)
        os.write(writer, ",".join(new_job_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        from_child = set(pipe.read().split(","))
    os.waitpid(child, 0)
    from_parent = {new_job_id() for _ in range(5)}
    assert len(from_child) == 5
    assert not from_child & from_parent
