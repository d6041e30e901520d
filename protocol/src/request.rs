//! The arguments of the login methods, as structs. Each is sent as a whole
//! message body, which D-Bus flattens into separate arguments: `Login` goes
//! out as `sss`, exactly as three strings did, so the wire is unchanged
//! (a struct nested *inside* a body would be `(sss)`: keep them whole bodies).

use serde::{Deserialize, Serialize};
use zbus::Type;

/// Who is logging in, to which PAM service, from which remote host (empty:
/// a local login). The body of `BeginLogin`, `EnrollAtLogin` and
/// `SendLoginCode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Login {
    pub user: String,
    pub service: String,
    pub rhost: String,
}

impl Login {
    pub fn new(user: String, service: String, rhost: String) -> Self {
        Self {
            user,
            service,
            rhost,
        }
    }
}

/// `Verify`'s body: a login's code, between the user and the service.
#[derive(Debug, Serialize, Type)]
pub struct VerifyArgs<'a> {
    pub user: &'a str,
    pub code: &'a str,
    pub service: &'a str,
    pub rhost: &'a str,
}

impl<'a> VerifyArgs<'a> {
    pub fn new(login: &'a Login, code: &'a str) -> Self {
        Self {
            user: &login.user,
            code,
            service: &login.service,
            rhost: &login.rhost,
        }
    }
}

/// The body of `ConfirmAtLogin` and `ConfirmEmailAtLogin`.
#[derive(Debug, Serialize, Type)]
pub struct ConfirmArgs<'a> {
    pub user: &'a str,
    pub code: &'a str,
}

impl<'a> ConfirmArgs<'a> {
    pub fn new(login: &'a Login, code: &'a str) -> Self {
        Self {
            user: &login.user,
            code,
        }
    }
}

/// `EmailEnrollAtLogin`'s body: the address goes between the user and the service.
#[derive(Debug, Serialize, Type)]
pub struct EmailEnrollArgs<'a> {
    pub user: &'a str,
    pub address: &'a str,
    pub service: &'a str,
    pub rhost: &'a str,
}

impl<'a> EmailEnrollArgs<'a> {
    pub fn new(login: &'a Login, address: &'a str) -> Self {
        Self {
            user: &login.user,
            address,
            service: &login.service,
            rhost: &login.rhost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::message::Message;

    /// The body signature a method call carries, as the daemon sees it.
    fn body_signature<B: Serialize + zbus::wire::DynamicType>(body: &B) -> (String, Vec<u8>) {
        let msg = Message::method_call(crate::OBJECT_PATH, crate::method::BEGIN_LOGIN)
            .build(body)
            .unwrap();
        // The header's signature is what goes on the wire (no outer parentheses).
        let signature = msg.header().signature().to_string_no_parens();
        (signature, msg.body().data().to_vec())
    }

    #[test]
    fn a_struct_body_is_the_loose_arguments_on_the_wire() {
        let login = Login {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: "192.0.2.1".into(),
        };
        assert_eq!(
            body_signature(&login),
            body_signature(&("alice", "sshd", "192.0.2.1"))
        );
        assert_eq!(body_signature(&login).0, "sss");
        assert_eq!(
            body_signature(&VerifyArgs::new(&login, "123456")),
            body_signature(&("alice", "123456", "sshd", "192.0.2.1"))
        );
        assert_eq!(
            body_signature(&EmailEnrollArgs::new(&login, "a@example.com")),
            body_signature(&("alice", "a@example.com", "sshd", "192.0.2.1"))
        );
        assert_eq!(
            body_signature(&ConfirmArgs {
                user: "alice",
                code: "123456"
            }),
            body_signature(&("alice", "123456"))
        );
    }
}
