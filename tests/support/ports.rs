//! Loopback ports for tests that need one nobody answers on. A port picked by binding and then releasing
//! it may be taken by another process before the test uses it; a [`ClosedPort`] stays bound, without
//! listening, for as long as the test holds it, so connections to it are refused and nothing else gets it.

use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr};

pub struct ClosedPort {
    pub port: u16,
    _socket: Socket,
}

impl ClosedPort {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// A port on 127.0.0.1 that refuses connections until the value is dropped.
pub fn closed_port() -> ClosedPort {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("bind a loopback port");
    let port = socket
        .local_addr()
        .expect("bound address")
        .as_socket()
        .expect("an IP address")
        .port();
    ClosedPort {
        port,
        _socket: socket,
    }
}

#[test]
fn a_closed_port_refuses_connections_while_it_is_held() {
    let closed = closed_port();
    let refused = std::net::TcpStream::connect(closed.addr()).expect_err("nobody listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // Held: binding it again fails.
    assert!(std::net::TcpListener::bind(closed.addr()).is_err());
}
