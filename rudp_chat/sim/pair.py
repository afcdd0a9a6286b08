"""One client and one server on a virtual network: where most simulations start."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from rudp_chat.core.config import ConnectionConfig, ListenerConfig
from rudp_chat.core.connection import Connection
from rudp_chat.core.listener import Listener
from rudp_chat.sim.endpoint import Endpoint
from rudp_chat.sim.link import LinkProfile
from rudp_chat.sim.network import Address, Network

__all__ = ["CLIENT", "SERVER", "SimulatedPair", "simulated_pair"]

SERVER: Final[Address] = ("10.0.0.1", 4000)
CLIENT: Final[Address] = ("10.0.0.2", 5000)


@dataclass(frozen=True, slots=True)
class SimulatedPair:
    network: Network
    client: Connection
    server: Endpoint
    """The server's listener; its connections appear once the handshake arrived."""
    client_endpoint: Endpoint


def simulated_pair(
    seed: int, up: LinkProfile, down: LinkProfile, config: ConnectionConfig
) -> SimulatedPair:
    """A client at :data:`CLIENT` dialling a server at :data:`SERVER` over ``up`` and ``down``
    (client to server, and back), both with ``config``; nothing has run yet. Every random
    choice, the network's and the endpoints', follows from ``seed``."""
    rng = random.Random(seed)
    network = Network(seed)
    network.set_link(CLIENT, SERVER, up)
    network.set_link(SERVER, CLIENT, down)
    server = Endpoint(Listener(rng.randbytes, ListenerConfig(connection=config)))
    network.attach(SERVER, server)
    client = Connection.connect(SERVER, 0.0, rng.randbytes, config)
    client_endpoint = Endpoint(client)
    network.attach(CLIENT, client_endpoint)
    return SimulatedPair(network, client, server, client_endpoint)
