//! Secrets at rest in the shared database: TOTP keys and e-mail addresses
//! sealed with XChaCha20-Poly1305 under the fleet key, a 32-byte key in a
//! root-only file that every host of the fleet holds and the database never
//! sees. A dump, a replica or a backup alone reveals no key.
//!
//! The user name and the field are the associated data, so a sealed value
//! moved to another user's row (or from `secret` to `email`) does not open.
//! Each value carries the key's id (the first 8 bytes of a BLAKE2b-256 hash of
//! the key), so a host with another key says so instead of "cannot decrypt".

use blake2::digest::Mac;
use blake2::digest::consts::U32;
use blake2::{Blake2bMac, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const ID_LEN: usize = 8;
/// Format byte, key id, nonce, then ciphertext and tag.
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + ID_LEN + NONCE_LEN;
/// The file's first line; the key follows in hex on the second.
const FILE_TAG: &str = "twofold-fleet-key-v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path}: no fleet key file; create one on the first host with `twofoldd --new-fleet-key` and copy it (root, 0600) to every other host"
    )]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a fleet key file ({reason}); create one with `twofoldd --new-fleet-key`")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{path}: readable by others (mode {mode:o}, owner uid {uid}): the fleet key must be owned by root with mode 0600 or 0400"
    )]
    Exposed { path: PathBuf, mode: u32, uid: u32 },
    #[error(
        "{path}: already exists; remove it first if you really mean to replace the fleet's key"
    )]
    Exists { path: PathBuf },
}

/// Why a sealed value does not open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed under the fleet key {sealed}, and this host's keys are {ours}")]
    OtherKey { sealed: String, ours: String },
    #[error("damaged, or moved from another user or field")]
    Damaged,
}

/// One key and its id.
struct Key {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: [u8; ID_LEN],
}

impl Key {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = blake2::Blake2b::<blake2::digest::consts::U32>::digest(bytes);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Self {
            bytes: Zeroizing::new(*bytes),
            id,
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }

    /// BLAKE2b-MAC of `value` as `user`'s `field`, keyed with this key.
    fn mac(&self, user: &str, field: &str, value: &[u8]) -> Blake2bMac<U32> {
        // A 32-byte key is always a valid BLAKE2b key (up to 64).
        let mut mac = <Blake2bMac<U32> as blake2::digest::KeyInit>::new_from_slice(&self.bytes[..])
            .unwrap_or_else(|_| unreachable!());
        mac.update(&FleetKey::aad(user, field));
        mac.update(&[0]);
        mac.update(value);
        mac
    }
}

/// The fleet key, wiped when dropped: the key that seals, then (during a
/// rotation, `twofoldd --rotate-fleet-key`) older keys that only open.
pub struct FleetKey {
    keys: Vec<Key>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetKey({})", self.ids())
    }
}

impl FleetKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            keys: vec![Key::new(bytes)],
        }
    }

    /// The sealing key's public name (hex), safe to log and to compare across hosts.
    pub fn id(&self) -> String {
        hex::encode(self.keys[0].id)
    }

    /// Every key's id, the sealing one first.
    pub fn ids(&self) -> String {
        let ids: Vec<String> = self.keys.iter().map(|k| hex::encode(k.id)).collect();
        ids.join(", ")
    }

    /// A keyed hash of `user`'s `field` value under the sealing key, for
    /// what is only ever compared, never read back (an e-mailed code):
    /// without the fleet key, a dump's tag of a 6-digit code cannot be
    /// tried against the million codes. The key's id comes first.
    pub fn tag(&self, user: &str, field: &str, value: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut out = key.id.to_vec();
        out.extend_from_slice(&key.mac(user, field, value).finalize().into_bytes());
        out
    }

    /// Whether `tag` is `tag(user, field, value)` under any of this host's
    /// keys (compared in constant time).
    pub fn tag_matches(&self, user: &str, field: &str, value: &[u8], tag: &[u8]) -> bool {
        let Some(key) = tag
            .get(..ID_LEN)
            .and_then(|id| self.keys.iter().find(|k| k.id == id))
        else {
            return false;
        };
        key.mac(user, field, value)
            .verify_slice(&tag[ID_LEN..])
            .is_ok()
    }

    /// Whether `sealed` was sealed with the sealing key (not an older one).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(1..1 + ID_LEN) == Some(&self.keys[0].id[..])
    }

    /// Read the key file: root's own (the daemon's euid), 0600 or 0400.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source: std::io::Error| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.mode() & 0o077 != 0 || meta.uid() != euid {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
            });
        }
        let mut text = Zeroizing::new(String::new());
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_string(&mut text)
            .map_err(io)?;
        Self::parse(&text).map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(FILE_TAG) {
            return Err(format!("the first line is not {FILE_TAG}"));
        }
        let mut keys = Vec::new();
        for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            hex::decode_to_slice(line, &mut key[..]).map_err(|_| {
                format!(
                    "each key line must be {} hex digits (a {KEY_LEN}-byte key)",
                    KEY_LEN * 2
                )
            })?;
            keys.push(Key::new(&key));
        }
        if keys.is_empty() {
            return Err("no key after the first line".into());
        }
        Ok(Self { keys })
    }

    fn text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(format!("{FILE_TAG}\n"));
        for key in &self.keys {
            text.push_str(&hex::encode(&key.bytes[..]));
            text.push('\n');
        }
        text
    }

    /// Replace the key file at `path` with this key, atomically (a
    /// temporary file, fsync, rename).
    fn write_over(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source: std::io::Error| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(self.text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The first step of a rotation: a new random key in front of the
    /// file's keys (it seals from now on; the older ones still open).
    pub fn rotate(path: &Path) -> Result<Self, KeyError> {
        let mut current = Self::load(path)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(&mut bytes[..]);
        current.keys.insert(0, Key::new(&bytes));
        current.write_over(path)?;
        Ok(current)
    }

    /// The last step: the file keeps the sealing key alone.
    pub fn forget_older(mut self, path: &Path) -> Result<Self, KeyError> {
        self.keys.truncate(1);
        self.write_over(path)?;
        Ok(self)
    }

    /// Make a new random key file (0600), refusing to replace one.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(&mut key[..]);
        let text = Zeroizing::new(format!("{FILE_TAG}\n{}\n", hex::encode(&key[..])));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => KeyError::Exists {
                    path: path.to_path_buf(),
                },
                _ => KeyError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::from_bytes(&key))
    }

    fn aad(user: &str, field: &str) -> Vec<u8> {
        format!("twofold/v1/{field}/{user}").into_bytes()
    }

    /// Seal `plain` as `user`'s `field`, with the sealing key.
    pub fn seal(&self, user: &str, field: &str, plain: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let aad = Self::aad(user, field);
        // Encryption of an in-memory buffer fails only past 256 GiB.
        let sealed = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open what `seal` made for the same `user` and `field`, with whichever
    /// of this host's keys it names.
    pub fn open(
        &self,
        user: &str,
        field: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != FORMAT {
            return Err(OpenError::Damaged);
        }
        let id = &sealed[1..1 + ID_LEN];
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(OpenError::OtherKey {
                sealed: hex::encode(id),
                ours: self.ids(),
            });
        };
        let nonce = XNonce::from_slice(&sealed[1 + ID_LEN..HEADER_LEN]);
        let aad = Self::aad(user, field);
        key.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn seals_and_opens() {
        let k = key(1);
        let sealed = k.seal("alice", "secret", b"0123456789abcdefghij");
        assert_eq!(
            k.open("alice", "secret", &sealed).unwrap().as_slice(),
            b"0123456789abcdefghij"
        );
        // Random nonces: the same value seals differently each time.
        assert_ne!(sealed, k.seal("alice", "secret", b"0123456789abcdefghij"));
        // The plain text is nowhere in the sealed bytes.
        assert!(!sealed.windows(10).any(|w| w == b"0123456789"));
    }

    #[test]
    fn bound_to_user_and_field() {
        let k = key(1);
        let sealed = k.seal("alice", "secret", b"key bytes of alice");
        assert_eq!(k.open("bob", "secret", &sealed), Err(OpenError::Damaged));
        assert_eq!(k.open("alice", "email", &sealed), Err(OpenError::Damaged));
    }

    #[test]
    fn a_tag_matches_its_value_user_field_and_key_only() {
        let k = key(1);
        let tag = k.tag("alice", "email-code", b"123456");
        assert!(k.tag_matches("alice", "email-code", b"123456", &tag));
        assert!(!k.tag_matches("alice", "email-code", b"123457", &tag));
        assert!(!k.tag_matches("bob", "email-code", b"123456", &tag));
        assert!(!k.tag_matches("alice", "secret", b"123456", &tag));
        assert!(!key(2).tag_matches("alice", "email-code", b"123456", &tag));
        assert!(!k.tag_matches("alice", "email-code", b"123456", &tag[..10]));
        // Not the value, and not an unkeyed hash of it.
        assert!(!tag.windows(6).any(|w| w == b"123456"));
        let plain = blake2::Blake2b::<U32>::digest(b"123456");
        assert!(!tag.windows(8).any(|w| w == &plain[..8]));
    }

    #[test]
    fn another_key_is_named_not_taken_for_damage() {
        let sealed = key(1).seal("alice", "secret", b"key bytes");
        match key(2).open("alice", "secret", &sealed) {
            Err(OpenError::OtherKey { sealed: s, ours }) => {
                assert_eq!(s, key(1).id());
                assert_eq!(ours, key(2).id());
            }
            other => panic!("{other:?}"),
        }
        // Same id but a changed byte anywhere: damaged.
        for i in [0, HEADER_LEN - 1, HEADER_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(key(1).open("alice", "secret", &bad).is_err(), "byte {i}");
        }
        assert_eq!(
            key(1).open("alice", "secret", &sealed[..HEADER_LEN]),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn key_file_created_private_read_back_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let made = FleetKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let read = FleetKey::load(&path).unwrap();
        assert_eq!(read.id(), made.id());
        let sealed = made.seal("alice", "secret", b"x");
        assert_eq!(
            read.open("alice", "secret", &sealed).unwrap().as_slice(),
            b"x"
        );
        assert!(matches!(
            FleetKey::create(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(FleetKey::load(&path).unwrap().id(), made.id());
    }

    #[test]
    fn a_rotation_seals_with_the_new_key_and_still_opens_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let old = FleetKey::create(&path).unwrap();
        let sealed_old = old.seal("alice", "secret", b"old");
        let both = FleetKey::rotate(&path).unwrap();
        assert_ne!(both.id(), old.id());
        assert_eq!(both.ids(), format!("{}, {}", both.id(), old.id()));
        let read = FleetKey::load(&path).unwrap();
        assert_eq!(read.ids(), both.ids());
        assert_eq!(
            read.open("alice", "secret", &sealed_old)
                .unwrap()
                .as_slice(),
            b"old"
        );
        assert!(!read.is_current(&sealed_old));
        let sealed_new = read.seal("alice", "secret", b"new");
        assert!(read.is_current(&sealed_new));
        // A host still on the old key names both ids.
        match old.open("alice", "secret", &sealed_new) {
            Err(OpenError::OtherKey { sealed, ours }) => {
                assert_eq!((sealed, ours), (both.id(), old.id()));
            }
            other => panic!("{other:?}"),
        }
        let new = read.forget_older(&path).unwrap();
        let read = FleetKey::load(&path).unwrap();
        assert_eq!(read.ids(), new.id());
        assert_eq!(
            read.open("alice", "secret", &sealed_new)
                .unwrap()
                .as_slice(),
            b"new"
        );
        assert!(read.open("alice", "secret", &sealed_old).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        assert!(matches!(
            FleetKey::load(&path),
            Err(KeyError::Missing { .. })
        ));
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let good = format!("{FILE_TAG}\n{}\n", "ab".repeat(KEY_LEN));
        write(&good, 0o644);
        let e = FleetKey::load(&path).unwrap_err();
        assert!(matches!(e, KeyError::Exposed { .. }), "{e}");
        assert!(e.to_string().contains("0600"), "{e}");
        // Short key, not hex, no key, no tag, empty.
        for text in [
            format!("{FILE_TAG}\n{}\n", "ab".repeat(KEY_LEN - 1)),
            format!("{FILE_TAG}\n\n"),
            format!("{FILE_TAG}\n{}\n", "zz".repeat(KEY_LEN)),
            "ab".repeat(KEY_LEN),
            String::new(),
        ] {
            write(&text, 0o600);
            let e = FleetKey::load(&path).unwrap_err();
            assert!(matches!(e, KeyError::Malformed { .. }), "{text:?}: {e}");
            assert!(e.to_string().contains("--new-fleet-key"), "{e}");
        }
        write(&good, 0o400);
        FleetKey::load(&path).unwrap();
        // A symbolic link is not followed.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(FleetKey::load(&link), Err(KeyError::Io { .. })));
    }
}
