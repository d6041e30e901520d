//! The policy's words as types: a rule's `Mode`, a second-factor `Method`,
//! and sets of methods. On the wire each is the string it always was
//! (signature `s`), so Rust code never handles them as free text.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use zbus::{Signature, Type};

/// How strictly a rule asks for a second factor, from least to most strict
/// (`Ord` follows that order: the strictest of several is their `max`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Type,
)]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Exempt,
    Optional,
    Recommend,
    Require,
}

impl Mode {
    pub const ALL: [Self; 4] = [Self::Exempt, Self::Optional, Self::Recommend, Self::Require];

    /// The word in the policy file, on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exempt => "exempt",
            Self::Optional => "optional",
            Self::Recommend => "recommend",
            Self::Require => "require",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode or none, as a string field or argument where empty means none: an
/// override that is not set (`ReportRow::override_mode`), or cleared
/// (`AdminSetOverride`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionalMode(pub Option<Mode>);

impl OptionalMode {
    /// The mode's word, or empty.
    pub fn as_str(self) -> &'static str {
        self.0.map_or("", Mode::as_str)
    }

    /// Empty is none; anything else must be a mode.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self(None));
        }
        Mode::parse(text).map(|m| Self(Some(m)))
    }
}

impl Type for OptionalMode {
    const SIGNATURE: &'static Signature = &Signature::Str;
}

impl Serialize for OptionalMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OptionalMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| de::Error::unknown_variant(&text, &MODE_WORDS))
    }
}

const MODE_WORDS: [&str; 5] = ["", "exempt", "optional", "recommend", "require"];

/// A second factor a rule may accept and a user may set up (backup codes
/// always work for an enrolled user and are not one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// An authenticator app's TOTP codes.
    Totp,
    /// Codes sent by e-mail.
    Email,
}

impl Method {
    pub const ALL: [Self; 2] = [Self::Totp, Self::Email];

    /// The word in the policy file, on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of methods: the factors a rule accepts, or those a user has set up.
/// On the wire, their words joined by commas (`totp`, `email`,
/// `totp,email`; empty for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Methods {
    pub totp: bool,
    pub email: bool,
}

impl Methods {
    pub const ANY: Self = Self {
        totp: true,
        email: true,
    };
    pub const NONE: Self = Self {
        totp: false,
        email: false,
    };

    pub fn contains(self, method: Method) -> bool {
        match method {
            Method::Totp => self.totp,
            Method::Email => self.email,
        }
    }

    pub fn with(mut self, method: Method) -> Self {
        match method {
            Method::Totp => self.totp = true,
            Method::Email => self.email = true,
        }
        self
    }

    /// The methods in the set, app first.
    pub fn list(self) -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|m| self.contains(*m))
            .collect()
    }

    /// `totp`, `email` or `totp,email`; empty for none.
    pub fn names(self) -> String {
        let names: Vec<&str> = self.list().into_iter().map(Method::as_str).collect();
        names.join(",")
    }

    /// Those in both sets.
    pub fn both(self, other: Self) -> Self {
        Self {
            totp: self.totp && other.totp,
            email: self.email && other.email,
        }
    }

    pub fn is_empty(self) -> bool {
        !self.totp && !self.email
    }

    /// A policy file's `methods = [...]`: at least one, each a method's word.
    pub fn from_names(names: &[String]) -> Result<Self, MethodsError> {
        let mut methods = Self::NONE;
        for name in names {
            match Method::parse(name) {
                Some(method) => methods = methods.with(method),
                None => return Err(MethodsError::NotAMethod(name.clone())),
            }
        }
        if methods.is_empty() {
            return Err(MethodsError::Empty);
        }
        Ok(methods)
    }

    /// The wire's comma-joined form; empty is none.
    fn parse_joined(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self::NONE);
        }
        text.split(',').try_fold(Self::NONE, |set, word| {
            Method::parse(word).map(|m| set.with(m))
        })
    }
}

impl Type for Methods {
    const SIGNATURE: &'static Signature = &Signature::Str;
}

impl Serialize for Methods {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.names())
    }
}

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_joined(&text).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Str(&text), &"methods joined by commas")
        })
    }
}

/// Why a list of method words is not a set of methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodsError {
    /// A word that names no method.
    NotAMethod(String),
    /// No method at all.
    Empty,
}

impl fmt::Display for MethodsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAMethod(name) => write!(
                f,
                "methods: {name:?} is not a method (use \"totp\" and/or \"email\")"
            ),
            Self::Empty => {
                f.write_str("methods must name at least one method (\"totp\", \"email\")")
            }
        }
    }
}

impl std::error::Error for MethodsError {}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::wire::{LE, serialized::Context, to_bytes};

    fn wire<T: Serialize + Type>(value: &T) -> (String, Vec<u8>) {
        let bytes = to_bytes(Context::new(LE, 0), value).unwrap();
        (T::SIGNATURE.to_string(), bytes.bytes().to_vec())
    }

    #[test]
    fn each_is_the_same_string_on_the_wire() {
        for mode in Mode::ALL {
            assert_eq!(wire(&mode), wire(&mode.as_str()));
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(
            Mode::ALL.map(Mode::as_str),
            ["exempt", "optional", "recommend", "require"]
        );
        for method in Method::ALL {
            assert_eq!(wire(&method), wire(&method.as_str()));
        }
        assert_eq!(Method::ALL.map(Method::as_str), ["totp", "email"]);
        assert_eq!(wire(&OptionalMode(None)), wire(&""));
        assert_eq!(wire(&OptionalMode(Some(Mode::Require))), wire(&"require"));
        assert_eq!(wire(&Methods::ANY), wire(&"totp,email"));
        assert_eq!(wire(&Methods::NONE), wire(&""));
    }

    #[test]
    fn sets_round_trip_and_refuse_unknown_words() {
        let email = Methods::NONE.with(Method::Email);
        for set in [Methods::NONE, Methods::ANY, email] {
            let bytes = to_bytes(Context::new(LE, 0), &set).unwrap();
            assert_eq!(bytes.deserialize::<Methods>().unwrap().0, set);
        }
        assert_eq!(Methods::ANY.list(), [Method::Totp, Method::Email]);
        assert_eq!(Methods::parse_joined("email,totp"), Some(Methods::ANY));
        assert_eq!(Methods::parse_joined("sms"), None);
        assert_eq!(OptionalMode::parse("strict"), None);
        assert_eq!(
            Methods::from_names(&["email".into()]),
            Ok(email),
            "a policy's list"
        );
        assert_eq!(Methods::from_names(&[]), Err(MethodsError::Empty));
        assert_eq!(
            Methods::from_names(&["sms".into()]),
            Err(MethodsError::NotAMethod("sms".into()))
        );
    }

    #[test]
    fn modes_order_from_least_to_most_strict() {
        assert!(Mode::Exempt < Mode::Optional);
        assert!(Mode::Optional < Mode::Recommend);
        assert!(Mode::Recommend < Mode::Require);
    }
}
