use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A string that must not be logged: `Debug` prints `***`, and the memory is
/// wiped on drop.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
#[zbus(signature = "s")]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is meant to be shown or checked.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::new("JBSWY3DPEHPK3PXP".into());
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "JBSWY3DPEHPK3PXP");
    }
}
