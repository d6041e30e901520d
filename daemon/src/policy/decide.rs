//! The decision: which rule applies to whom, when, and with which methods.
//! Pure: the groups and the date are given.

use super::{Decision, Methods, Mode, Override, Policy, Rule, Subject, Unenrolled};
use std::collections::HashSet;
use std::net::IpAddr;
use time::Date;

impl Policy {
    /// The rule that applies, by the precedence at the top of this file.
    pub fn decide(&self, subject: &Subject<'_>, user_override: Override, today: Date) -> Decision {
        let mut steps = Vec::new();
        if let Some(mode) = user_override {
            steps.push(format!(
                "per-user override: {} (set by an administrator; it comes first)",
                mode.as_str()
            ));
            return Decision {
                rule: "override".into(),
                mode,
                methods: Methods::ANY,
                enforcement: None,
                grace_days: 0,
                steps,
            };
        }
        steps.push("per-user override: none".into());
        let groups = match &subject.groups {
            Ok(groups) => groups,
            Err(why) => {
                // Never weaker because a directory service is down: the strictest
                // mode any rule for this service (or the default) could give.
                let candidates = self.rules.iter().filter(|r| {
                    r.services.is_empty() || r.services.iter().any(|s| s == subject.service)
                });
                let strictest = candidates
                    .chain(std::iter::once(&self.default))
                    .max_by_key(|r| r.mode_on(today))
                    .unwrap_or(&self.default);
                steps.push(format!(
                    "groups: unknown ({why}); the strictest applicable rule is used"
                ));
                steps.push(format!(
                    "rule \"{}\": {}",
                    strictest.name,
                    strictest.describe()
                ));
                return Decision {
                    rule: "strictest".into(),
                    mode: strictest.mode_on(today),
                    methods: strictest.methods_on(today),
                    enforcement: strictest.enforcement_after(today),
                    grace_days: 0,
                    steps,
                };
            }
        };
        let mut listed: Vec<&str> = groups.iter().map(String::as_str).collect();
        listed.sort_unstable();
        steps.push(format!(
            "groups: {}",
            if listed.is_empty() {
                "none".into()
            } else {
                listed.join(", ")
            }
        ));
        for rule in &self.rules {
            let member = rule.groups.iter().find(|g| groups.contains(*g));
            let service_ok =
                rule.services.is_empty() || rule.services.iter().any(|s| s == subject.service);
            match (member, service_ok) {
                (None, _) => steps.push(format!(
                    "rule \"{}\": needs group {} (not a member), skipped",
                    rule.name,
                    rule.groups.join(" or ")
                )),
                (Some(_), false) => steps.push(format!(
                    "rule \"{}\": only for service {} (this is {}), skipped",
                    rule.name,
                    rule.services.join(" or "),
                    if subject.service.is_empty() {
                        "no service"
                    } else {
                        subject.service
                    }
                )),
                (Some(group), true) => {
                    steps.push(format!(
                        "rule \"{}\": group {group} matches: {}",
                        rule.name,
                        rule.describe()
                    ));
                    return self.decision(rule, today, steps);
                }
            }
        }
        steps.push(format!(
            "no rule matched: default rule, {}",
            self.default.describe()
        ));
        self.decision(&self.default, today, steps)
    }

    fn decision(&self, rule: &Rule, today: Date, mut steps: Vec<String>) -> Decision {
        let mode = rule.mode_on(today);
        let methods = rule.methods_on(today);
        let enforcement = rule.enforcement_after(today);
        steps.push(match enforcement {
            Some(date) => format!(
                "mode today ({today}): {}; require from {date}",
                mode.as_str()
            ),
            None => format!("mode today ({today}): {}", mode.as_str()),
        });
        if methods != Methods::ANY {
            steps.push(format!("methods today: {} only", methods.names()));
        }
        Decision {
            rule: rule.name.clone(),
            mode,
            methods,
            enforcement,
            grace_days: rule.grace_days,
            steps,
        }
    }

    /// The strictest mode any rule could give this user today, whatever the
    /// service: what `twofold disable` must respect.
    pub fn strictest_for(
        &self,
        groups: &Result<HashSet<String>, String>,
        user_override: Override,
        today: Date,
    ) -> Mode {
        if let Some(mode) = user_override {
            return mode;
        }
        let default = self.default.mode_on(today);
        match groups {
            Err(_) => self
                .rules
                .iter()
                .map(|r| r.mode_on(today))
                .fold(default, Mode::max),
            Ok(groups) => self
                .rules
                .iter()
                .filter(|r| r.groups.iter().any(|g| groups.contains(g)))
                .map(|r| r.mode_on(today))
                .fold(default, Mode::max),
        }
    }

    /// Whether any rule, on any date, accepts fewer than every method: only
    /// then must a code be checked against the rule at `Verify` too.
    pub fn restricts_methods(&self) -> bool {
        self.rules
            .iter()
            .chain(std::iter::once(&self.default))
            .any(|r| {
                r.methods != Methods::ANY || r.schedule.iter().any(|s| s.methods != Methods::ANY)
            })
    }

    /// Whether `rhost` is an address inside a trusted network.
    pub fn trusted(&self, rhost: &str) -> Option<ipnet::IpNet> {
        let ip: IpAddr = rhost.parse().ok()?;
        self.trusted_networks
            .iter()
            .find(|n| n.contains(&ip))
            .copied()
    }

    /// Every group a rule names (for resolving a user's memberships).
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.groups.iter().map(String::as_str))
    }

    /// One line for `twofold admin check-config` and the log.
    pub fn summary(&self) -> String {
        format!(
            "{} rule{}, default {}{}{}{}",
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" },
            self.default.describe(),
            if self.trusted_networks.is_empty() {
                String::new()
            } else {
                format!(", {} trusted networks", self.trusted_networks.len())
            },
            if self.remember_device_secs > 0 {
                format!(", devices remembered {} s", self.remember_device_secs)
            } else {
                String::new()
            },
            match self.unenrolled_require {
                Unenrolled::Enroll => ", enrollment at login under require",
                Unenrolled::Refuse => ", refusal under require when not enrolled",
            }
        )
    }
}

/// Which of an enrolled user's methods a login checks, and whether the
/// login must go on to set up one the rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factors {
    pub check: Methods,
    pub must_enroll: bool,
}

/// A user enrolled only with methods the rule does not accept still proves
/// themselves with those (never with the password alone); under `require`
/// the login then adds an accepted one.
pub fn factors(has: Methods, accepted: Methods, mode: Mode) -> Factors {
    let usable = has.both(accepted);
    if usable.is_empty() {
        Factors {
            check: has,
            must_enroll: mode == Mode::Require,
        }
    } else {
        Factors {
            check: usable,
            must_enroll: false,
        }
    }
}
