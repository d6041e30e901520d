//! The journal's record format and the decoding of a user's two files:
//! 32-byte records (kind, value, time, generation, checksum), each an
//! `Event`, folded into the enrollment they belong to. Pure: no disk here
//! (`file.rs` reads and writes; the fuzz target decodes).

use super::{ENROLLMENT_VERSION, Enrollment, Event, JournalError, Loaded};

pub const RECORD_LEN: usize = 32;

impl Event {
    /// The record's kind, value and time, and its three spare bytes (9 to
    /// 11, zero in records written before they were used): for an accepted
    /// code the app, the drift, and 1 when the drift is recorded.
    fn kind_value_at(self) -> (u8, u64, u64, [u8; 3]) {
        match self {
            Self::TotpAccepted {
                step,
                at,
                app,
                drift,
            } => (
                1,
                step,
                at,
                [
                    app,
                    drift.unwrap_or(0).to_le_bytes()[0],
                    u8::from(drift.is_some()),
                ],
            ),
            Self::StepBurned { app, step, at } => (6, step, at, [app, 0, 0]),
            Self::BackupUsed { index, at } => (2, index, at, [0; 3]),
            Self::Failure { at, ceiling } => (3, ceiling, at, [0; 3]),
            Self::Unlock { at } => (4, 0, at, [0; 3]),
            Self::EmailAccepted { at } => (5, 0, at, [0; 3]),
        }
    }

    pub fn encode(self, generation: u64) -> [u8; RECORD_LEN] {
        let (kind, value, at, spare) = self.kind_value_at();
        let mut r = [0u8; RECORD_LEN];
        r[0..8].copy_from_slice(&generation.to_le_bytes());
        r[8] = kind;
        r[9..12].copy_from_slice(&spare);
        r[12..20].copy_from_slice(&value.to_le_bytes());
        r[20..28].copy_from_slice(&at.to_le_bytes());
        let crc = crc32fast::hash(&r[..28]);
        r[28..32].copy_from_slice(&crc.to_le_bytes());
        r
    }

    /// `Ok(None)`: checksum mismatch (torn or damaged); `Err`: checksummed but meaningless.
    pub fn decode(r: &[u8; RECORD_LEN]) -> Result<Option<(u64, Event)>, JournalError> {
        let crc = u32::from_le_bytes([r[28], r[29], r[30], r[31]]);
        if crc32fast::hash(&r[..28]) != crc {
            return Ok(None);
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (generation, value, at) = (word(0), word(12), word(20));
        let event = match r[8] {
            1 => Event::TotpAccepted {
                step: value,
                at,
                app: r[9],
                drift: (r[11] == 1).then(|| i8::from_le_bytes([r[10]])),
            },
            2 => Event::BackupUsed { index: value, at },
            3 => Event::Failure { at, ceiling: value },
            4 => Event::Unlock { at },
            5 => Event::EmailAccepted { at },
            6 => Event::StepBurned {
                app: r[9],
                step: value,
                at,
            },
            k => return Err(JournalError::UnknownKind(k)),
        };
        Ok(Some((generation, event)))
    }
}

/// Which of a user's two files does not decode, and why.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Enrollment(String),
    Journal(JournalError),
}

/// A user's state from the bytes of their enrollment file and journal,
/// without touching the disk (the fuzz target `state_decoder` calls this).
pub fn decode_state(enrollment_json: &str, journal: &[u8]) -> Result<Loaded, DecodeError> {
    let mut enrollment: Enrollment = serde_json::from_str(enrollment_json)
        .map_err(|e| DecodeError::Enrollment(e.to_string()))?;
    if enrollment.version != ENROLLMENT_VERSION {
        return Err(DecodeError::Enrollment(format!(
            "unsupported version {}",
            enrollment.version
        )));
    }
    let full = journal.len() / RECORD_LEN;
    let mut journal_len = 0u64;
    for (i, chunk) in journal.chunks_exact(RECORD_LEN).enumerate() {
        let mut record = [0u8; RECORD_LEN];
        record.copy_from_slice(chunk);
        match Event::decode(&record).map_err(DecodeError::Journal)? {
            Some((generation, event)) => {
                if generation == enrollment.generation {
                    enrollment.apply(event).map_err(DecodeError::Journal)?;
                }
                journal_len += RECORD_LEN as u64;
            }
            // A bad checksum in the last record is an append that never completed.
            None if i + 1 == full => break,
            None => {
                return Err(DecodeError::Journal(JournalError::Checksum(i)));
            }
        }
    }
    Ok(Loaded {
        enrollment,
        journal_len,
        revision: 0,
        last_host: None,
    })
}
