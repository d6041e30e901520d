//! RFC 6238 codes (via totp-rs) and the replay rule: a time step is accepted
//! at most once, and never one older than the last accepted.

use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub digits: u8,
    pub period: u64,
    pub window: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum TotpCheck {
    /// Valid for this step, which is newer than the last accepted one.
    Valid(u64),
    /// Valid, but for a step already accepted or older.
    Replayed,
    Wrong,
}

#[derive(Debug, thiserror::Error)]
#[error("TOTP parameters refused: {0}")]
pub struct TotpParamError(String);

fn build(secret: &[u8], params: TotpParams) -> Result<Totp, TotpParamError> {
    // Checked here because totp-rs panics on more than 9 digits, and the
    // parameters of an enrollment come from disk.
    if !(6..=8).contains(&params.digits) || params.period == 0 || secret.len() < 16 {
        return Err(TotpParamError(format!(
            "{} digits, {} s period, {}-byte secret",
            params.digits,
            params.period,
            secret.len()
        )));
    }
    Ok(Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(params.digits)
        .with_step_duration(params.period)
        .with_skew(u16::try_from(params.window).unwrap_or(u16::MAX))
        .with_secret(secret.to_vec())
        .build_noncompliant())
}

/// The code for `time`, as an authenticator app would show it.
pub fn code_at(secret: &[u8], params: TotpParams, time: u64) -> Result<String, TotpParamError> {
    Ok(build(secret, params)?.generate(time).to_string())
}

/// Check `code` at `now` against the window, refusing any step at or before
/// `last_step`. Token comparison is constant-time (totp-rs).
pub fn check(
    secret: &[u8],
    params: TotpParams,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> Result<TotpCheck, TotpParamError> {
    let totp = build(secret, params)?;
    Ok(match totp.check(code, now) {
        Some(step) if last_step.is_some_and(|last| step <= last) => TotpCheck::Replayed,
        Some(step) => TotpCheck::Valid(step),
        None => TotpCheck::Wrong,
    })
}

/// For a code that is wrong within the window: the offset in steps (beyond
/// the window, within `span` steps either way) of a step whose code it is,
/// the nearest one if several. Only to tell a user that their device's clock
/// looks wrong: a code found here is never accepted. Every step of the span is
/// computed and compared in constant time, whatever the answer.
pub fn diagnose(
    secret: &[u8],
    params: TotpParams,
    code: &str,
    now: u64,
    span: u64,
) -> Result<Option<i64>, TotpParamError> {
    let totp = build(secret, params)?;
    let here = i64::try_from(now / params.period).unwrap_or(i64::MAX);
    let window = i64::try_from(params.window).unwrap_or(0);
    let span = i64::try_from(span).unwrap_or(0);
    let mut found: Option<i64> = None;
    for k in -span..=span {
        let Some(step) = here.checked_add(k).and_then(|s| u64::try_from(s).ok()) else {
            continue;
        };
        let time = step.saturating_mul(params.period);
        let same = constant_time_eq(totp.generate(time).to_string().as_bytes(), code.as_bytes());
        if same && k.abs() > window && found.is_none_or(|f| k.abs() < f.abs()) {
            found = Some(k);
        }
    }
    Ok(found)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Key URI apps import: `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...`.
/// Algorithm, digits and period are written only where they differ from the
/// Key URI format's defaults (SHA1, 6, 30), so the usual URI is short enough
/// for a QR code that fits an 80x24 terminal.
pub fn key_uri(
    secret: &[u8],
    params: TotpParams,
    issuer: &str,
    account: &str,
) -> Result<String, TotpParamError> {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(params.digits)
        .with_step_duration(params.period)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| TotpParamError(e.to_string()))?;
    // The URI holds the secret: every copy made here is wiped. The kept
    // parameters are slices of `full`, the added ones are not secret, and
    // the URI is written into one buffer of its final size, so that no
    // partial copy is freed unwiped when a growing string moves.
    let full = Zeroizing::new(totp.to_url().map_err(|e| TotpParamError(e.to_string()))?);
    // totp-rs writes some of them (which, depends on its version): keep
    // only those that differ from the defaults, then add any missing.
    let (base, query) = full.split_once('?').unwrap_or((full.as_str(), ""));
    let wanted = [
        ("algorithm", "SHA1".to_string(), "SHA1"),
        ("digits", params.digits.to_string(), "6"),
        ("period", params.period.to_string(), "30"),
    ];
    let added: Vec<String> = wanted
        .iter()
        .filter(|(_, value, default)| value != default)
        .map(|(key, value, _)| format!("{key}={value}"))
        .collect();
    let parts: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
            !wanted.iter().any(|(k, _, _)| *k == key)
        })
        .chain(added.iter().map(String::as_str))
        .collect();
    let len = base.len()
        + 1
        + parts.iter().map(|p| p.len()).sum::<usize>()
        + parts.len().saturating_sub(1);
    let mut uri = String::with_capacity(len);
    uri.push_str(base);
    uri.push('?');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            uri.push('&');
        }
        uri.push_str(part);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const EIGHT: TotpParams = TotpParams {
        digits: 8,
        period: 30,
        window: 1,
    };
    const SIX: TotpParams = TotpParams {
        digits: 6,
        period: 30,
        window: 1,
    };

    /// RFC 6238 Appendix B, SHA1 column.
    #[test]
    fn rfc6238_test_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(
                code_at(RFC_SECRET, EIGHT, time).unwrap(),
                expected,
                "T = {time}"
            );
            assert_eq!(
                check(
                    RFC_SECRET,
                    TotpParams { window: 0, ..EIGHT },
                    expected,
                    time,
                    None
                )
                .unwrap(),
                TotpCheck::Valid(time / 30)
            );
        }
    }

    /// Window edges with a fixed clock: the step before and after count, two away do not.
    #[test]
    fn window_edges() {
        let now = 1_700_000_015; // step 56_666_667, 15 s into it
        let step = now / 30;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let t = (step as i64 + offset) as u64 * 30;
            let code = code_at(RFC_SECRET, SIX, t).unwrap();
            let result = check(RFC_SECRET, SIX, &code, now, None).unwrap();
            assert_eq!(
                matches!(result, TotpCheck::Valid(_)),
                accepted,
                "offset {offset}"
            );
        }
        // The last second of a step and the first of the next.
        let last_second = step * 30 + 29;
        let code = code_at(RFC_SECRET, SIX, (step + 2) * 30).unwrap();
        assert_eq!(
            check(RFC_SECRET, SIX, &code, last_second, None).unwrap(),
            TotpCheck::Wrong
        );
        assert!(matches!(
            check(RFC_SECRET, SIX, &code, last_second + 1, None).unwrap(),
            TotpCheck::Valid(_)
        ));
        // Window 0 accepts only the current step.
        let prev = code_at(RFC_SECRET, SIX, (step - 1) * 30).unwrap();
        assert_eq!(
            check(
                RFC_SECRET,
                TotpParams { window: 0, ..SIX },
                &prev,
                now,
                None
            )
            .unwrap(),
            TotpCheck::Wrong
        );
    }

    #[test]
    fn a_code_off_by_minutes_is_found_but_never_within_the_window() {
        let now = 1_700_000_015;
        for k in [-20i64, -6, -2, 2, 6, 20] {
            let t = (now as i64 + k * 30) as u64;
            let code = code_at(RFC_SECRET, SIX, t).unwrap();
            assert_eq!(
                check(RFC_SECRET, SIX, &code, now, None).unwrap(),
                TotpCheck::Wrong
            );
            assert_eq!(
                diagnose(RFC_SECRET, SIX, &code, now, 20).unwrap(),
                Some(k),
                "{k}"
            );
        }
        // Inside the window is not a diagnosis (it is accepted); beyond the span nothing.
        let near = code_at(RFC_SECRET, SIX, now + 30).unwrap();
        assert_eq!(diagnose(RFC_SECRET, SIX, &near, now, 20).unwrap(), None);
        let far = code_at(RFC_SECRET, SIX, now + 21 * 30).unwrap();
        assert_eq!(diagnose(RFC_SECRET, SIX, &far, now, 20).unwrap(), None);
    }

    #[test]
    fn a_step_is_accepted_once() {
        let now = 1_700_000_015;
        let code = code_at(RFC_SECRET, SIX, now).unwrap();
        let TotpCheck::Valid(step) = check(RFC_SECRET, SIX, &code, now, None).unwrap() else {
            panic!("fresh code refused");
        };
        assert_eq!(
            check(RFC_SECRET, SIX, &code, now, Some(step)).unwrap(),
            TotpCheck::Replayed
        );
        let older = code_at(RFC_SECRET, SIX, now - 30).unwrap();
        assert_eq!(
            check(RFC_SECRET, SIX, &older, now, Some(step)).unwrap(),
            TotpCheck::Replayed
        );
        let newer = code_at(RFC_SECRET, SIX, now + 30).unwrap();
        assert_eq!(
            check(RFC_SECRET, SIX, &newer, now, Some(step)).unwrap(),
            TotpCheck::Valid(step + 1)
        );
    }

    #[test]
    fn the_key_uri_is_written_once_into_a_buffer_of_its_size() {
        // A string that grew would have left earlier copies of the secret
        // in freed memory; the returned one is wiped by its owner.
        for params in [SIX, EIGHT] {
            let uri = key_uri(RFC_SECRET, params, "twofold", "alice@host1").unwrap();
            assert_eq!(uri.capacity(), uri.len(), "{uri}");
        }
    }

    #[test]
    fn key_uri_has_issuer_label_and_parameters() {
        let uri = key_uri(RFC_SECRET, SIX, "twofold", "alice@host1").unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/twofold:alice%40host1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=twofold"
        );
        // Other than the defaults, they are written.
        let eight = key_uri(
            RFC_SECRET,
            TotpParams {
                digits: 8,
                period: 60,
                window: 1,
            },
            "twofold",
            "a@h",
        )
        .unwrap();
        assert!(
            eight.ends_with("&issuer=twofold&digits=8&period=60"),
            "{eight}"
        );
        assert!(!eight.contains("algorithm"), "{eight}");
    }
}
