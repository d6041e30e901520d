use super::*;
use crate::backup::HashParams;
use crate::config::Config;
use crate::policy::Policy;
use crate::store::FileStore;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Instant;
use zbus::fdo::ConnectionCredentials;

/// The name zbus serves the interface under is the contract's (the
/// macro spells it in `protocol/`, as zbus takes only a literal).
#[test]
fn the_served_interface_is_the_contracts() {
    use zbus::object_server::Interface;
    assert_eq!(super::Service::name().as_str(), twofold_protocol::INTERFACE);
}

/// The deadline the tests give in place of the real one.
const SHORT: Duration = Duration::from_millis(300);
/// Longer than any deadline of these tests by far.
const LONG: Duration = Duration::from_secs(5);

pub(super) fn engine() -> (tempfile::TempDir, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    let store = FileStore::init(&cfg.state_dir).unwrap();
    let fast = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let engine = Engine::new(cfg, store, fast, Policy::default());
    (dir, Arc::new(engine))
}

/// The bus daemon's side of twofoldd's connection to it: it says which
/// uid a sender is (`Some`), or never answers (`None`), as a stopped
/// bus does.
struct Bus {
    uid: Option<u32>,
}

#[zbus::interface(name = "org.freedesktop.DBus")]
impl Bus {
    async fn get_connection_credentials(
        &self,
        _name: String,
    ) -> zbus::fdo::Result<ConnectionCredentials> {
        match self.uid {
            Some(uid) => Ok(ConnectionCredentials::default().set_unix_user_id(uid)),
            None => std::future::pending().await,
        }
    }
}

/// twofoldd's connection to a `Bus` (a real D-Bus connection, peer to
/// peer), and the bus's end, which must be kept.
async fn connected_to(bus: Bus) -> (zbus::Connection, zbus::Connection) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let serving = zbus::connection::Builder::unix_stream(theirs)
        .server(zbus::Guid::generate())
        .p2p()
        .serve_at("/org/freedesktop/DBus", bus)
        .build();
    let serving = zruntime::spawn(serving);
    let twofoldd = zbus::connection::Builder::unix_stream(ours)
        .p2p()
        .build()
        .await
        .unwrap();
    (twofoldd, serving.await.unwrap().unwrap())
}

/// A call as the bus delivers it: from a sender.
fn call() -> zbus::Message {
    zbus::Message::method_call(twofold_protocol::OBJECT_PATH, "Status")
        .sender(":1.42")
        .interface(twofold_protocol::INTERFACE)
        .build(&())
        .unwrap()
}

fn is_internal(r: &Result<(), TwofoldError>, text: &str) -> bool {
    matches!(r, Err(TwofoldError::Internal(m)) if m.contains(text))
}

#[test]
fn work_on_the_bus_past_its_deadline_is_answered_at_the_deadline() {
    let (_dir, engine) = engine();
    zbus::block_on(async {
        let (twofoldd, _bus) = connected_to(Bus { uid: Some(1000) }).await;
        let shared = Shared::with_deadlines(engine, SHORT, LONG).unwrap();
        let service = Service::on_bus(shared, &twofoldd).await.unwrap();
        let msg = call();
        // Within the deadline: answered, as the uid the bus named.
        let caller = Arc::new(AtomicU32::new(0));
        let seen = caller.clone();
        let r = service
            .run(&msg.header(), move |_, uid| {
                seen.store(uid, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(caller.load(Ordering::SeqCst), 1000);
        // Past it: the caller is told at the deadline, not when the work ends.
        let t = Instant::now();
        let r = service
            .run(&msg.header(), |_, _| {
                crate::clock::sleep(SHORT * 5);
                Ok(())
            })
            .await;
        let took = t.elapsed();
        assert!(is_internal(&r, "did not finish within"), "{r:?}");
        assert!(took >= SHORT && took < SHORT * 3, "answered after {took:?}");
    });
}

#[test]
fn work_on_the_socket_past_its_deadline_is_refused_when_it_ends() {
    let (_dir, engine) = engine();
    zbus::block_on(async {
        let shared = Shared::with_deadlines(engine, SHORT, LONG).unwrap();
        let peer = peer::Peer {
            uid: 1000,
            pid: None,
        };
        let service = Service::on_socket(shared, peer, None, None);
        // No sender: the kernel named the socket's peer.
        let msg = zbus::Message::method_call(twofold_protocol::OBJECT_PATH, "Status")
            .build(&())
            .unwrap();
        let r = service.run(&msg.header(), |_, _| Ok(())).await;
        assert!(r.is_ok(), "{r:?}");
        let r = service
            .run(&msg.header(), |_, _| {
                crate::clock::sleep(SHORT * 2);
                Ok(())
            })
            .await;
        assert!(is_internal(&r, "did not finish within"), "{r:?}");
    });
}

#[test]
fn a_bus_that_never_says_who_is_calling_is_given_up_at_the_deadline() {
    let (_dir, engine) = engine();
    zbus::block_on(async {
        let (twofoldd, _bus) = connected_to(Bus { uid: None }).await;
        let shared = Shared::with_deadlines(engine, LONG, SHORT).unwrap();
        let runtime = shared.runtime.clone();
        let service = Service::on_bus(shared, &twofoldd).await.unwrap();
        let msg = call();
        let ran = Arc::new(AtomicBool::new(false));
        let worked = ran.clone();
        let t = Instant::now();
        let r = runtime
            .timeout(
                LONG,
                service.run(&msg.header(), move |_, _| {
                    worked.store(true, Ordering::SeqCst);
                    Ok(())
                }),
            )
            .await
            .expect("no answer before the test gave up");
        let took = t.elapsed();
        assert!(is_internal(&r, "did not say who is calling"), "{r:?}");
        assert!(took >= SHORT && took < SHORT * 3, "answered after {took:?}");
        assert!(!ran.load(Ordering::SeqCst), "worked for an unknown caller");
    });
}
