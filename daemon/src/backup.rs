//! Single-use backup codes: 10 random characters (50 bits) from the Crockford
//! alphabet, shown once and stored only as Argon2id hashes under a per-user salt.
//! One hash per attempt is compared with every unused stored hash.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use serde::{Deserialize, Serialize};
use twofold_protocol::SecretString;
use twofold_protocol::code::{BACKUP_ALPHABET, BACKUP_CODE_LEN};
use zeroize::{Zeroize, Zeroizing};

/// OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane).
pub const DEFAULT_PARAMS: HashParams = HashParams {
    m_cost_kib: 19_456,
    t_cost: 2,
    p_cost: 1,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// The stored form of a user's backup codes. `hashes[i]` is `None` once code i is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSet {
    #[serde(with = "hex::serde")]
    pub salt: Vec<u8>,
    pub params: HashParams,
    pub hashes: Vec<Option<HexHash>>,
    /// The hashes of the codes used from this set (moved here from `hashes`
    /// as each is used), so that a used code typed again is told apart from
    /// a wrong guess, also after a restart. At most as many as the set had;
    /// a new set starts empty. Absent in state written before it existed
    /// (and then not written, so such state reads the same both ways).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spent: Vec<HexHash>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HexHash(#[serde(with = "hex::serde")] pub Vec<u8>);

impl std::fmt::Debug for HexHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HexHash(***)")
    }
}

/// What a typed backup code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The unused code at this index.
    Unused(usize),
    /// A code already used.
    Spent,
    Wrong,
}

#[derive(Debug, thiserror::Error)]
#[error("backup code hashing failed: {0}")]
pub struct HashError(String);

/// Argon2id with its working memory (`m_cost_kib` KiB, 19 MiB by default),
/// allocated once for every hash of one call: the 10 codes of an enrollment
/// share one allocation instead of taking ten. Freed as one block of that
/// size, which twofoldd's allocator settings hand straight back to the kernel
/// (see `main.rs`). Wiped first: the blocks are derived from the code, and
/// argon2 itself leaves them as they are.
struct Hasher {
    argon: Argon2<'static>,
    memory: Vec<Block>,
}

impl Hasher {
    fn new(params: HashParams) -> Result<Hasher, HashError> {
        let params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|e| HashError(e.to_string()))?;
        Ok(Hasher {
            memory: vec![Block::default(); params.block_count()],
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        })
    }

    fn hash(&mut self, code: &str, salt: &[u8]) -> Result<Zeroizing<Vec<u8>>, HashError> {
        let mut out = Zeroizing::new(vec![0u8; 32]);
        // Every block is written before it is read, so what an earlier hash
        // left in the memory does not matter.
        self.argon
            .hash_password_into_with_memory(code.as_bytes(), salt, &mut out, &mut self.memory[..])
            .map_err(|e| HashError(e.to_string()))?;
        Ok(out)
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.memory.zeroize();
    }
}

/// `count` fresh codes (normalized, no dash) and their stored form.
pub fn generate(
    count: u32,
    params: HashParams,
) -> Result<(Vec<SecretString>, BackupSet), HashError> {
    let mut rng = rand::rng();
    let mut salt = vec![0u8; 16];
    rng.fill(&mut salt[..]);
    let mut hasher = Hasher::new(params)?;
    let mut codes = Vec::new();
    let mut hashes = Vec::new();
    for _ in 0..count {
        let code: String = (0..BACKUP_CODE_LEN)
            .map(|_| BACKUP_ALPHABET[rng.random_range(0..BACKUP_ALPHABET.len())] as char)
            .collect();
        hashes.push(Some(HexHash(hasher.hash(&code, &salt)?.to_vec())));
        codes.push(SecretString::new(code));
    }
    Ok((
        codes,
        BackupSet {
            salt,
            params,
            hashes,
            spent: Vec::new(),
        },
    ))
}

impl BackupSet {
    /// Index of the unused code matching `candidate` (normalized), if any.
    /// Every unused hash is compared, in constant time.
    pub fn find(&self, candidate: &str) -> Result<Option<usize>, HashError> {
        let digest = Hasher::new(self.params)?.hash(candidate, &self.salt)?;
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            if let Some(HexHash(stored)) = stored
                && constant_time_eq(stored, &digest)
                && found.is_none()
            {
                found = Some(i);
            }
        }
        Ok(found)
    }

    /// As `find`, with one hash, also telling a code used before (among
    /// `spent`) apart from a wrong one. A code that never existed matches
    /// neither list, so it reads as wrong, as before.
    pub fn find_or_spent(&self, candidate: &str) -> Result<Found, HashError> {
        let digest = Hasher::new(self.params)?.hash(candidate, &self.salt)?;
        let unused = self
            .hashes
            .iter()
            .enumerate()
            .fold(None, |found, (i, h)| match h {
                Some(HexHash(stored)) if found.is_none() && constant_time_eq(stored, &digest) => {
                    Some(i)
                }
                _ => found,
            });
        Ok(match unused {
            Some(i) => Found::Unused(i),
            None if self.spent.iter().fold(false, |seen, HexHash(s)| {
                seen | constant_time_eq(s, &digest)
            }) =>
            {
                Found::Spent
            }
            None => Found::Wrong,
        })
    }

    pub fn remaining(&self) -> u32 {
        self.hashes.iter().filter(|h| h.is_some()).count() as u32
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so unit tests stay fast; the daemon uses DEFAULT_PARAMS.
    const FAST: HashParams = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn generated_codes_verify_and_are_distinct() {
        let (codes, set) = generate(10, FAST).unwrap();
        assert_eq!(codes.len(), 10);
        assert_eq!(set.remaining(), 10);
        for (i, code) in codes.iter().enumerate() {
            let parsed = twofold_protocol::code::parse(
                twofold_protocol::code::display_backup(code.expose()).as_bytes(),
            )
            .unwrap();
            assert!(matches!(parsed, twofold_protocol::code::Code::Backup(_)));
            assert_eq!(set.find(parsed.as_str()).unwrap(), Some(i));
        }
        let mut unique: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        assert_eq!(set.find("0000000000").unwrap(), None);
    }

    #[test]
    fn used_codes_no_longer_match() {
        let (codes, mut set) = generate(5, FAST).unwrap();
        set.hashes[2] = None;
        assert_eq!(set.find(codes[2].expose()).unwrap(), None);
        assert_eq!(set.remaining(), 4);
    }

    /// Hashes that share one working memory are those of Argon2id run
    /// alone, each with memory of its own.
    #[test]
    fn a_shared_working_memory_changes_no_hash() {
        let params = HashParams {
            m_cost_kib: 256,
            t_cost: 2,
            p_cost: 1,
        };
        let (codes, set) = generate(4, params).unwrap();
        for (code, stored) in codes.iter().zip(&set.hashes) {
            let alone = Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(256, 2, 1, Some(32)).unwrap(),
            );
            let mut out = [0u8; 32];
            alone
                .hash_password_into(code.expose().as_bytes(), &set.salt, &mut out)
                .unwrap();
            assert_eq!(stored.as_ref().unwrap().0, out);
        }
    }

    #[test]
    fn a_spent_code_is_told_apart_from_a_wrong_one() {
        let (codes, mut set) = generate(3, FAST).unwrap();
        let used = set.hashes[1].take().unwrap();
        set.spent.push(used);
        let find = |c: &str| set.find_or_spent(c).unwrap();
        assert_eq!(find(codes[0].expose()), Found::Unused(0));
        assert_eq!(find(codes[1].expose()), Found::Spent);
        assert_eq!(find("0000000000"), Found::Wrong);
    }

    #[test]
    fn stored_form_holds_no_code() {
        let (codes, set) = generate(3, FAST).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        for code in &codes {
            assert!(!json.contains(code.expose()));
        }
        assert!(!format!("{set:?}").contains(&hex::encode(&set.hashes[0].as_ref().unwrap().0)));
    }
}
