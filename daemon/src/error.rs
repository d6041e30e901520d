//! What the engine's calls fail with. A refusal (`Refused`) goes to the
//! caller as it is. A fault of the daemon itself (its state, the account
//! database, a key it cannot use) is told to the caller only as "ask your
//! administrator", and logged once with its detail, where the reply is
//! made (`Error::into_reply`, called by `calls.rs`): the conversions here
//! never log, so a fault is neither lost nor logged twice.

use crate::audit::{self, Level};
use crate::store::StoreError;
use twofold_protocol::TwofoldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A refusal or an answer the caller is meant to read.
    #[error(transparent)]
    Refused(#[from] TwofoldError),
    /// The state could not be read or written.
    #[error("state error: {0}")]
    State(#[from] StoreError),
    /// Anything else the daemon could not do (a stored key it cannot use,
    /// a journal it cannot fold, an account lookup that failed).
    #[error("state error: {0}")]
    Fault(String),
}

/// What the caller reads when the daemon itself failed.
const FAULT_REPLY: &str = "twofold cannot read or write its state, so the code cannot be checked. Ask your administrator.";

impl Error {
    /// A fault, with its detail for the log.
    pub fn fault(detail: impl std::fmt::Display) -> Self {
        Self::Fault(detail.to_string())
    }

    /// A fault that its caller has logged already (naming the login it
    /// broke): the same reply for the caller, not logged again.
    pub fn logged(self) -> Self {
        match self {
            Self::Refused(e) => Self::Refused(e),
            Self::State(_) | Self::Fault(_) => {
                Self::Refused(TwofoldError::Internal(FAULT_REPLY.into()))
            }
        }
    }

    /// The reply for the caller; a fault is logged here, once.
    pub fn into_reply(self) -> TwofoldError {
        match self {
            Self::Refused(e) => e,
            fault @ (Self::State(_) | Self::Fault(_)) => {
                audit::log(Level::Error, &fault.to_string());
                TwofoldError::Internal(FAULT_REPLY.into())
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
