"""Leader terms as etcd leases, against a real etcd on loopback: one holder at a time, a claim
refused while a lease is valid, revoked at once on proof of death, lost when it expires unrenewed
(and the holder's local check says so before etcd lets anyone else claim), kept by renewals."""

import time

import pytest

from tenacia.chaos.etcd import ETCD, MISSING, EtcdServer
from tenacia.train.replicas.leadership import open_store
from tenacia.train.replicas.lease import LeaseHeld

pytestmark = [pytest.mark.skipif(ETCD is None, reason=MISSING), pytest.mark.timeout(60)]
TTL = 2


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdServer(tmp_path_factory.mktemp("etcd") / "data") as server:
        yield server


def store(etcd, run_dir):
    return open_store(etcd.url, run_dir, TTL, 2.0)


def test_one_holder_at_a_time_and_a_released_lease_frees_the_next_term(etcd, tmp_path):
    a, b = store(etcd, tmp_path), store(etcd, tmp_path)
    first = a.claim(0, "h:1")
    assert first.term == 1 and first.valid() and first.exclusive
    assert b.leader() == {"term": 1, "replica": 0, "control": "h:1", "pid": b.leader()["pid"],
                          "lease": first.lease_id}
    with pytest.raises(LeaseHeld) as held:
        b.claim(1, "h:2", at_least=2)
    assert (held.value.term, held.value.replica, held.value.control) == (1, 0, "h:1")
    first.release()
    assert not first.valid()
    second = b.claim(1, "h:2", at_least=2)
    assert second.term == 2 and b.newest_term() == 2
    second.release()
    assert store(etcd, tmp_path / "other").newest_term() == 0  # runs do not share keys


def test_a_dead_leaders_lease_is_revoked_by_the_member_that_saw_it_die(etcd, tmp_path):
    a, b = store(etcd, tmp_path), store(etcd, tmp_path)
    old = a.claim(0, "h:1")
    new = b.claim(1, "h:2", dead_term=old.term)  # its connection closed: no TTL to wait
    assert new.term == old.term + 1
    assert not old.renew() and "term 2 of replica 1 leads now" == old.lost and old.newest == new.term
    with pytest.raises(LeaseHeld):
        a.claim(0, "h:1", dead_term=old.term)  # a stale proof of death revokes nothing newer
    new.release()


def test_an_unrenewed_lease_stops_its_holder_before_anyone_else_may_claim(etcd, tmp_path):
    a, b = store(etcd, tmp_path), store(etcd, tmp_path)
    old = a.claim(0, "h:1")  # no renewals: the holder is cut off from etcd
    while old.valid():
        with pytest.raises(LeaseHeld):
            b.claim(1, "h:2")  # while the holder still believes in its lease, nobody else leads
        time.sleep(0.05)
    deadline = time.monotonic() + 5 * TTL
    while True:
        try:
            new = b.claim(1, "h:2")
            break
        except LeaseHeld:
            assert time.monotonic() < deadline, "etcd never expired the lease"
            time.sleep(0.1)
    assert new.term == old.term + 1 and not old.valid()
    new.release()


def test_renewals_keep_a_lease_valid_past_its_ttl_and_report_a_loss_once(etcd, tmp_path):
    a, b = store(etcd, tmp_path), store(etcd, tmp_path)
    lease = a.claim(0, "h:1")
    lost = []
    lease.start(on_lost=lost.append)
    time.sleep(2 * TTL)
    assert lease.valid() and lost == []
    b.revoke(lease.lease_id)  # e.g. an operator, or a member's proof of death
    deadline = time.monotonic() + 5 * TTL
    while lease.valid():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert lost == ["the etcd lease expired or was revoked"]
    lease.release()
