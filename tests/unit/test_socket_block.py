"""The unit tier really has no network: a test that connects anywhere fails."""

from __future__ import annotations

import _socket
import socket

import pytest
import urllib3

from socket_block import NetworkBlocked


def test_connecting_to_localhost_is_blocked() -> None:
    with pytest.raises(NetworkBlocked, match="network blocked"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_making_an_internet_socket_is_blocked() -> None:
    for family in (socket.AF_INET, socket.AF_INET6):
        with pytest.raises(NetworkBlocked):
            socket.socket(family, socket.SOCK_STREAM)
    with pytest.raises(NetworkBlocked):
        socket.socket()  # the default family is AF_INET


def test_a_socket_made_before_the_block_cannot_connect() -> None:
    made_earlier = socket.socket(fileno=_socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach())
    with made_earlier, pytest.raises(NetworkBlocked):
        made_earlier.connect(("127.0.0.1", 9))


def test_an_http_client_and_name_lookups_are_blocked() -> None:
    with pytest.raises(NetworkBlocked):
        urllib3.PoolManager().request("GET", "http://127.0.0.1:9/", retries=False)
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("localhost", 80)


def test_unix_sockets_stay_allowed() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"
