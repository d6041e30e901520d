//! The login socket's serve loop over a real socket pair: the handshake as
//! zbus's and libdbus's clients and the PAM module speak it (pipelined
//! too), its bounds, and the dispatch of calls.

use super::*;
use crate::bus::frame::SEND_DEADLINE;
use crate::limits::MAX_BODY_BYTES;
use std::io::{Read, Write};
use zbus::message::{Flags, Type};

const GUID: &str = "0123456789abcdef0123456789abcdef";

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

fn hex(uid: u32) -> String {
    uid.to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A served connection: the client's end, and what the serve loop ended with.
struct Served {
    client: UnixStream,
    end: std::thread::JoinHandle<End>,
    _dir: tempfile::TempDir,
}

fn serve_one() -> Served {
    let (dir, engine) = super::super::tests::engine();
    let shared = zbus::block_on(async { Shared::new(engine) }).unwrap();
    let (client, server) = UnixStream::pair().unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let peer = peer_of(&server).unwrap();
    let end = std::thread::spawn(move || {
        let service = Service::on_socket(shared, peer, None, None);
        connection(Conn::new(server), peer, &service, GUID)
    });
    Served {
        client,
        end,
        _dir: dir,
    }
}

/// One line of the server's, with its `\r\n`.
fn line(client: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while !line.ends_with(b"\r\n") {
        if client.read(&mut byte).unwrap() == 0 {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn reply(client: &mut UnixStream) -> zbus::Message {
    let mut bytes = vec![0; 16];
    client.read_exact(&mut bytes).unwrap();
    let len = super::super::frame::message_len(&bytes[..16].try_into().unwrap()).unwrap();
    bytes.resize(len, 0);
    client.read_exact(&mut bytes[16..]).unwrap();
    let data = zbus::wire::serialized::Data::new(
        bytes,
        zbus::wire::serialized::Context::new(zbus::wire::Endian::Little, 0),
    );
    // SAFETY: the bytes are twofoldd's reply, parsed and checked by zbus.
    unsafe { zbus::Message::from_bytes(data) }.unwrap()
}

fn ping() -> zbus::Message {
    zbus::Message::method_call("/", "Ping")
        .interface("org.freedesktop.DBus.Peer")
        .build(&())
        .unwrap()
}

fn call<B>(member: &str, body: &B) -> zbus::Message
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    zbus::Message::method_call(twofold_protocol::OBJECT_PATH, member)
        .interface(twofold_protocol::INTERFACE)
        .build(body)
        .unwrap()
}

fn is_reply_to(reply: &zbus::Message, call: &zbus::Message) -> bool {
    reply.header().reply_serial() == Some(call.primary_header().serial_num())
}

/// Authenticated: AUTH, OK, BEGIN.
fn begin(client: &mut UnixStream) {
    write!(client, "\0AUTH EXTERNAL {}\r\n", hex(uid())).unwrap();
    assert_eq!(line(client), format!("OK {GUID}\r\n"));
    client.write_all(b"BEGIN\r\n").unwrap();
}

fn error_name(reply: &zbus::Message) -> String {
    assert_eq!(reply.message_type(), Type::Error);
    reply.header().error_name().unwrap().to_string()
}

#[test]
fn auth_begin_and_a_call_in_one_write_are_all_served() {
    let mut s = serve_one();
    let call = ping();
    let mut bytes = format!("\0AUTH EXTERNAL {}\r\nBEGIN\r\n", hex(uid())).into_bytes();
    bytes.extend_from_slice(call.data().bytes());
    s.client.write_all(&bytes).unwrap();
    assert_eq!(line(&mut s.client), format!("OK {GUID}\r\n"));
    let r = reply(&mut s.client);
    assert_eq!(r.message_type(), Type::MethodReturn);
    assert!(is_reply_to(&r, &call));
    drop(s.client);
    assert!(matches!(s.end.join().unwrap(), End::Closed));
}

#[test]
fn another_uid_in_auth_is_rejected() {
    let mut s = serve_one();
    write!(s.client, "\0AUTH EXTERNAL {}\r\n", hex(uid() + 1)).unwrap();
    assert_eq!(line(&mut s.client), "REJECTED EXTERNAL\r\n");
    // BEGIN without OK: the connection is closed.
    s.client.write_all(b"BEGIN\r\n").unwrap();
    assert_eq!(line(&mut s.client), "");
    assert!(matches!(s.end.join().unwrap(), End::Refused));
}

#[test]
fn auth_without_a_response_asks_for_it_and_takes_an_empty_one() {
    let mut s = serve_one();
    s.client.write_all(b"\0AUTH EXTERNAL\r\n").unwrap();
    assert_eq!(line(&mut s.client), "DATA\r\n");
    s.client.write_all(b"DATA\r\n").unwrap();
    assert_eq!(line(&mut s.client), format!("OK {GUID}\r\n"));
    s.client.write_all(b"AUTH ANONYMOUS\r\n").unwrap();
    assert_eq!(line(&mut s.client), "ERROR \"unknown command\"\r\n");
}

#[test]
fn other_mechanisms_are_rejected_and_file_descriptors_refused() {
    let mut s = serve_one();
    s.client.write_all(b"\0AUTH ANONYMOUS\r\nAUTH\r\n").unwrap();
    assert_eq!(line(&mut s.client), "REJECTED EXTERNAL\r\n");
    assert_eq!(line(&mut s.client), "REJECTED EXTERNAL\r\n");
    write!(s.client, "AUTH EXTERNAL {}\r\n", hex(uid())).unwrap();
    assert_eq!(line(&mut s.client), format!("OK {GUID}\r\n"));
    s.client.write_all(b"NEGOTIATE_UNIX_FD\r\n").unwrap();
    assert!(line(&mut s.client).starts_with("ERROR"));
    s.client.write_all(b"BEGIN\r\n").unwrap();
    let call = ping();
    s.client.write_all(call.data().bytes()).unwrap();
    assert!(is_reply_to(&reply(&mut s.client), &call));
}

#[test]
fn an_overlong_authentication_line_ends_the_connection() {
    let mut s = serve_one();
    let mut bytes = b"\0AUTH EXTERNAL ".to_vec();
    bytes.extend(std::iter::repeat_n(b'3', 5000));
    // The server may close before reading it all.
    let _ = s.client.write_all(&bytes);
    assert!(matches!(s.end.join().unwrap(), End::Refused));
    assert_eq!(line(&mut s.client), "");
}

#[test]
fn too_many_authentication_lines_end_the_connection() {
    let mut s = serve_one();
    let _ = s.client.write_all(b"\0");
    for _ in 0..20 {
        let _ = s.client.write_all(b"AUTH ANONYMOUS\r\n");
    }
    assert!(matches!(s.end.join().unwrap(), End::Refused));
}

#[test]
fn a_silent_peer_is_dropped_at_the_handshake_deadline() {
    let s = serve_one();
    let started = std::time::Instant::now();
    assert!(matches!(s.end.join().unwrap(), End::Refused));
    let took = started.elapsed();
    assert!(
        took >= HANDSHAKE_DEADLINE && took < HANDSHAKE_DEADLINE * 2,
        "{took:?}"
    );
}

#[test]
fn an_oversized_message_is_refused_unread() {
    let mut s = serve_one();
    begin(&mut s.client);
    // A primary header announcing a body over the bound, and nothing else.
    let mut h = [b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&(MAX_BODY_BYTES + 1).to_le_bytes());
    h[12..16].copy_from_slice(&100u32.to_le_bytes());
    s.client.write_all(&h).unwrap();
    assert!(matches!(s.end.join().unwrap(), End::Oversized));
}

#[test]
fn methods_not_served_on_the_socket_are_unknown() {
    let mut s = serve_one();
    begin(&mut s.client);
    for call in [
        call("Status", &()),
        call("AdminReport", &()),
        zbus::Message::method_call(twofold_protocol::OBJECT_PATH, "Introspect")
            .interface("org.freedesktop.DBus.Introspectable")
            .build(&())
            .unwrap(),
    ] {
        s.client.write_all(call.data().bytes()).unwrap();
        let r = reply(&mut s.client);
        assert!(is_reply_to(&r, &call));
        assert_eq!(error_name(&r), "org.freedesktop.DBus.Error.UnknownMethod");
    }
}

#[test]
fn a_login_method_answers_with_the_interfaces_errors() {
    let mut s = serve_one();
    begin(&mut s.client);
    // Malformed arguments, as zbus's interface answers them.
    let bad = call(twofold_protocol::method::BEGIN_LOGIN, &("tf-x",));
    s.client.write_all(bad.data().bytes()).unwrap();
    let r = reply(&mut s.client);
    assert_eq!(error_name(&r), "org.freedesktop.DBus.Error.InvalidArgs");
    // A user no one has: the engine's own answer, named as on the bus.
    let begin = call(
        twofold_protocol::method::BEGIN_LOGIN,
        &("tf-nobody-at-all-here", "sshd", "192.0.2.1"),
    );
    s.client.write_all(begin.data().bytes()).unwrap();
    let r = reply(&mut s.client);
    assert!(is_reply_to(&r, &begin));
    let name = error_name(&r);
    assert!(name.starts_with("org.twofold.Error."), "{name}");
}

#[test]
fn a_call_expecting_no_reply_gets_none() {
    let mut s = serve_one();
    begin(&mut s.client);
    let quiet = zbus::Message::method_call("/", "Ping")
        .interface("org.freedesktop.DBus.Peer")
        .with_flags(Flags::NO_REPLY_EXPECTED)
        .build(&())
        .unwrap();
    let call = ping();
    let mut bytes = quiet.data().bytes().to_vec();
    bytes.extend_from_slice(call.data().bytes());
    s.client.write_all(&bytes).unwrap();
    // The first reply is the second call's.
    assert!(is_reply_to(&reply(&mut s.client), &call));
}

#[test]
fn a_peer_that_never_reads_its_replies_is_dropped() {
    let mut s = serve_one();
    begin(&mut s.client);
    // Calls sent without a reply ever read: the replies fill the socket,
    // and the worker must not wait in `send` for ever.
    let mut writer = s.client.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let flood = std::thread::spawn(move || {
        let call = ping();
        while writer.write_all(call.data().bytes()).is_ok() {}
    });
    let started = std::time::Instant::now();
    while !s.end.is_finished() && started.elapsed() < SEND_DEADLINE * 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    assert!(s.end.is_finished(), "the worker still waits after {took:?}");
    assert!(took >= SEND_DEADLINE, "{took:?}");
    assert!(matches!(s.end.join().unwrap(), End::Refused));
    // The connection is closed: the flood's writes fail, and its thread ends.
    flood.join().unwrap();
}
