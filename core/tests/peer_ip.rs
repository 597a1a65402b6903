//! `Engine::peer_ip`: the address of a connection's peer, read from its socket (for
//! limits per source address on the failure path of a `hello`).

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use rushhour_core::conn::ConnKind;
use rushhour_core::engine::Engine;
use rushhour_core::limits::Limits;
use rushhour_core::store::MemoryStore;

#[test]
fn peer_ip_reads_the_connections_socket() {
    let engine = Engine::new(Limits::default(), Box::new(MemoryStore::new(16))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let conn = engine
        .attach(Some(OwnedFd::from(accepted)), ConnKind::Session, false)
        .unwrap();
    assert_eq!(engine.peer_ip(conn), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    // No socket, or no such connection: no address.
    let socketless = engine.attach(None, ConnKind::Session, false).unwrap();
    assert_eq!(engine.peer_ip(socketless), None);
    engine.detach(conn);
    assert_eq!(engine.peer_ip(conn), None);
    drop(client);
}
