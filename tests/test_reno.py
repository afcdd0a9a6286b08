"""The Reno reference flow (``reno.py``) behaves as the yardstick it is used as.

``benchmarks/simulated.py`` judges rudp's fairness against it, so it must be a sound Reno: alone
it fills the bottleneck, two of them split it evenly, and through random loss it still delivers
every packet in order. All in virtual time, seeded.
"""

from __future__ import annotations

import pytest
from reno import PAYLOAD, RenoReceiver, RenoSender

from rudp_chat.sim import LinkProfile, Network
from rudp_chat.sim.network import Address

RATE = 10e6 / 8  # bytes per second: simulated.py's bulk bottleneck
ONE_WAY_S = 0.025
QUEUE = 63  # datagrams: 1.5 x the BDP of 1,200-byte datagrams, as simulated.py sizes it
WARMUP_S = 5.0
MEASURE_S = 15.0


def _flows(count: int, seed: int, loss: float = 0.0) -> tuple[Network, list[RenoSender],
                                                               list[RenoReceiver]]:  # fmt: skip
    """``count`` Reno flows from their own addresses through one shared bottleneck."""
    network = Network(seed)
    clients: list[Address] = [(f"10.0.2.{index + 1}", 5000) for index in range(count)]
    servers: list[Address] = [("10.0.0.1", 4001 + index) for index in range(count)]
    profile = LinkProfile(loss=loss, delay=ONE_WAY_S, rate=RATE, queue=QUEUE)
    network.share_link(zip(clients, servers, strict=True), profile)
    senders = [RenoSender(server) for server in servers]
    receivers = [RenoReceiver() for _ in servers]
    for client, server, sender, receiver in zip(clients, servers, senders, receivers, strict=True):
        network.set_link(server, client, LinkProfile(delay=ONE_WAY_S))
        network.attach(server, receiver)
        network.attach(client, sender)
    return network, senders, receivers


def _delivered_in_window(network: Network, receivers: list[RenoReceiver]) -> list[int]:
    network.run(until=WARMUP_S)
    before = [receiver.delivered_bytes for receiver in receivers]
    network.run(until=WARMUP_S + MEASURE_S)
    return [r.delivered_bytes - b for r, b in zip(receivers, before, strict=True)]


def test_one_flow_fills_the_bottleneck_with_a_sawtooth() -> None:
    network, (sender,), receivers = _flows(1, seed=1)
    network.run(until=WARMUP_S)
    episodes = sender.loss_episodes
    (delivered,) = _delivered_in_window(network, receivers)
    assert delivered / MEASURE_S / RATE >= 0.9 * PAYLOAD / 1200  # its payload share of a packet
    assert sender.loss_episodes > episodes  # it keeps probing: the queue overflows now and then
    assert sender.timeouts == 0  # and each overflow is repaired from ACKs, not by the timer


def test_two_flows_split_the_bottleneck_evenly() -> None:
    network, _, receivers = _flows(2, seed=2)
    delivered = _delivered_in_window(network, receivers)
    jain = sum(delivered) ** 2 / (2 * sum(value * value for value in delivered))
    assert jain >= 0.95
    assert sum(delivered) / MEASURE_S / RATE >= 0.9 * PAYLOAD / 1200


@pytest.mark.parametrize("seed", [3, 4])
def test_random_loss_is_repaired_in_order(seed: int) -> None:
    network, senders, receivers = _flows(1, seed=seed, loss=0.05)
    network.run(until=10.0)
    (sender,), (receiver,) = senders, receivers
    assert sender.retransmissions > 0  # the loss happened and was repaired
    assert receiver.expected > 1000  # packets delivered in order, past every hole
    assert receiver.expected <= sender.next_number
    assert receiver.delivered_bytes == receiver.expected * PAYLOAD
